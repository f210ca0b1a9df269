// The Vercel AI SDK against the gateway, through its OpenAI-compatible provider, streamed.
//   python3 dev.py example examples/vercel_ai.mjs   (npm packages go to a cache, not the clone)
// GATEWAY_URL, GATEWAY_API_KEY and GATEWAY_MODEL override the demo's defaults.
import { createOpenAICompatible } from "@ai-sdk/openai-compatible";
import { streamText } from "ai";

const gateway = createOpenAICompatible({
  name: "gateway",
  baseURL: (process.env.GATEWAY_URL ?? "http://127.0.0.1:8080") + "/v1",
  apiKey: process.env.GATEWAY_API_KEY ?? "sk-gateway-demo",
});

const result = streamText({
  model: gateway(process.env.GATEWAY_MODEL ?? "gemma-2b"),
  prompt: "Name three colours.",
});
for await (const text of result.textStream) {
  process.stdout.write(text);
}
process.stdout.write("\n");
