"""The anthropic SDK against the gateway's Messages API (``/v1/messages``), plain and streamed.

The base URL has no ``/v1``: the SDK adds it.

    python3 dev.py example examples/anthropic_messages.py
    (GATEWAY_URL, GATEWAY_API_KEY and GATEWAY_MODEL override the demo defaults)
"""

import os

from anthropic import Anthropic

client = Anthropic(
    base_url=os.environ.get("GATEWAY_URL", "http://127.0.0.1:8080"),
    api_key=os.environ.get("GATEWAY_API_KEY", "sk-gateway-demo"),
)
model = os.environ.get("GATEWAY_MODEL", "gemma-2b")
messages = [{"role": "user", "content": "Name three colours."}]

message = client.messages.create(model=model, max_tokens=256, messages=messages)
print("".join(block.text for block in message.content if block.type == "text"))

with client.messages.stream(model=model, max_tokens=256, messages=messages) as stream:
    for text in stream.text_stream:
        print(text, end="", flush=True)
print()
