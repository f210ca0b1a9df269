"""LlamaIndex's OpenAILike against the gateway: a completion, then a streamed chat.

``context_window`` is given so that LlamaIndex needs no tokenizer (nothing is downloaded).

    python3 dev.py example examples/llamaindex_chat.py
    (GATEWAY_URL, GATEWAY_API_KEY and GATEWAY_MODEL override the demo defaults)
"""

import os

from llama_index.core.llms import ChatMessage
from llama_index.llms.openai_like import OpenAILike

llm = OpenAILike(
    api_base=os.environ.get("GATEWAY_URL", "http://127.0.0.1:8080") + "/v1",
    api_key=os.environ.get("GATEWAY_API_KEY", "sk-gateway-demo"),
    model=os.environ.get("GATEWAY_MODEL", "gemma-2b"),
    is_chat_model=True,
    context_window=8192,
)

print(llm.complete("Name three colours.").text)
for chunk in llm.stream_chat([ChatMessage(role="user", content="Name three animals.")]):
    print(chunk.delta or "", end="", flush=True)
print()
