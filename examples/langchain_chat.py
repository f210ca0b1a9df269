"""LangChain's ChatOpenAI against the gateway: invoke, then stream.

python3 dev.py example examples/langchain_chat.py
(GATEWAY_URL, GATEWAY_API_KEY and GATEWAY_MODEL override the demo defaults)
"""

import os

from langchain_openai import ChatOpenAI

chat = ChatOpenAI(
    base_url=os.environ.get("GATEWAY_URL", "http://127.0.0.1:8080") + "/v1",
    api_key=os.environ.get("GATEWAY_API_KEY", "sk-gateway-demo"),
    model=os.environ.get("GATEWAY_MODEL", "gemma-2b"),
)

print(chat.invoke("Name three colours.").content)
for chunk in chat.stream("Name three animals."):
    print(chunk.content, end="", flush=True)
print()
