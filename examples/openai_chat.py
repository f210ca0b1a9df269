"""The openai SDK against the gateway: one answer, then the same question streamed.

python3 dev.py example examples/openai_chat.py
(GATEWAY_URL, GATEWAY_API_KEY and GATEWAY_MODEL override the demo defaults)
"""

import os

from openai import OpenAI

client = OpenAI(
    base_url=os.environ.get("GATEWAY_URL", "http://127.0.0.1:8080") + "/v1",
    api_key=os.environ.get("GATEWAY_API_KEY", "sk-gateway-demo"),
)
model = os.environ.get("GATEWAY_MODEL", "gemma-2b")
messages = [{"role": "user", "content": "Name three colours."}]

answer = client.chat.completions.create(model=model, messages=messages)
print(answer.choices[0].message.content)
print(f"({answer.usage.prompt_tokens} + {answer.usage.completion_tokens} tokens, estimated)")

for chunk in client.chat.completions.create(model=model, messages=messages, stream=True):
    if chunk.choices:
        print(chunk.choices[0].delta.content or "", end="", flush=True)
print()
