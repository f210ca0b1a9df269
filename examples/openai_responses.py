"""The openai SDK's Responses API (``/v1/responses``) against the gateway, plain and streamed.

python3 dev.py example examples/openai_responses.py
(GATEWAY_URL, GATEWAY_API_KEY and GATEWAY_MODEL override the demo defaults)
"""

import os

from openai import OpenAI

client = OpenAI(
    base_url=os.environ.get("GATEWAY_URL", "http://127.0.0.1:8080") + "/v1",
    api_key=os.environ.get("GATEWAY_API_KEY", "sk-gateway-demo"),
)
model = os.environ.get("GATEWAY_MODEL", "gemma-2b")

response = client.responses.create(model=model, input="Name three colours.")
print(response.output_text)

with client.responses.stream(model=model, input="Name three animals.") as stream:
    for event in stream:
        if event.type == "response.output_text.delta":
            print(event.delta, end="", flush=True)
print()
