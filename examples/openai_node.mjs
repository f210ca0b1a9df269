// The openai Node SDK against the gateway, streamed.
//   python3 dev.py example examples/openai_node.mjs   (npm packages go to a cache, not the clone)
// GATEWAY_URL, GATEWAY_API_KEY and GATEWAY_MODEL override the demo's defaults.
import OpenAI from "openai";

const client = new OpenAI({
  baseURL: (process.env.GATEWAY_URL ?? "http://127.0.0.1:8080") + "/v1",
  apiKey: process.env.GATEWAY_API_KEY ?? "sk-gateway-demo",
});

const stream = await client.chat.completions.create({
  model: process.env.GATEWAY_MODEL ?? "gemma-2b",
  messages: [{ role: "user", content: "Name three colours." }],
  stream: true,
});
for await (const chunk of stream) {
  process.stdout.write(chunk.choices[0]?.delta?.content ?? "");
}
process.stdout.write("\n");
