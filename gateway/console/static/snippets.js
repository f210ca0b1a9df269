// The playground's request as code to paste: curl, Python (openai SDK), JavaScript (openai).
// The key is never written into a snippet: each reads it from $GATEWAY_API_KEY.

function shellQuote(text) {
  return `'${text.replace(/'/g, "'\\''")}'`;
}

export function snippet(kind, baseUrl, request) {
  const json = JSON.stringify(request, null, 2);
  if (kind === 'curl') {
    return [
      `curl -N ${baseUrl}/chat/completions \\`,
      '  -H "Authorization: Bearer $GATEWAY_API_KEY" \\',
      '  -H "Content-Type: application/json" \\',
      `  -d ${shellQuote(json)}`,
    ].join('\n');
  }
  if (kind === 'python') {
    // A JSON string literal is also a valid Python string literal.
    return [
      'import json',
      'import os',
      '',
      'from openai import OpenAI',
      '',
      `client = OpenAI(base_url=${JSON.stringify(baseUrl)}, api_key=os.environ["GATEWAY_API_KEY"])`,
      `request = json.loads(${JSON.stringify(json)})`,
      'for chunk in client.chat.completions.create(**request):',
      '    if chunk.choices and chunk.choices[0].delta.content:',
      '        print(chunk.choices[0].delta.content, end="", flush=True)',
      'print()',
    ].join('\n');
  }
  return [
    'import OpenAI from "openai";',
    '',
    `const client = new OpenAI({ baseURL: ${JSON.stringify(baseUrl)}, apiKey: process.env.GATEWAY_API_KEY });`,
    `const stream = await client.chat.completions.create(${json});`,
    'for await (const chunk of stream) {',
    '  process.stdout.write(chunk.choices[0]?.delta?.content ?? "");',
    '}',
  ].join('\n');
}
