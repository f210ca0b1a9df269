// The playground's request as code to paste: curl, Python (openai SDK), JavaScript (openai).
// The key is never written into a snippet: each reads it from $GATEWAY_API_KEY.

function shellQuote(text) {
  return `'${text.replace(/'/g, "'\\''")}'`;
}

/** A Python literal for a JSON value (a JSON string is also a valid Python string). */
function py(value, indent = '') {
  if (value === null || value === undefined) return 'None';
  if (value === true) return 'True';
  if (value === false) return 'False';
  if (typeof value === 'number') return String(value);
  if (typeof value === 'string') return JSON.stringify(value);
  const inner = `${indent}    `;
  if (Array.isArray(value)) {
    if (!value.length) return '[]';
    return `[\n${value.map((v) => inner + py(v, inner)).join(',\n')},\n${indent}]`;
  }
  const entries = Object.entries(value);
  if (!entries.length) return '{}';
  return `{\n${entries.map(([k, v]) => `${inner}${JSON.stringify(k)}: ${py(v, inner)}`).join(',\n')},\n${indent}}`;
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
    return [
      'import os',
      '',
      'from openai import OpenAI',
      '',
      `client = OpenAI(base_url=${JSON.stringify(baseUrl)}, api_key=os.environ["GATEWAY_API_KEY"])`,
      `request = ${py(request)}`,
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
