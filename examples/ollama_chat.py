"""The ``ollama`` Python library against the gateway's Ollama API (``/api/chat``): the models
the key may use, then a chat, plain and streamed.

The host is the gateway's root (no ``/api``: the library adds it); the key goes as a bearer
token (or set ``OLLAMA_API_KEY``, which the library sends by itself).

    python examples/ollama_chat.py  # GATEWAY_URL, GATEWAY_API_KEY, GATEWAY_MODEL override
"""

import os

import ollama

client = ollama.Client(
    host=os.environ.get("GATEWAY_URL", "http://127.0.0.1:8080"),
    headers={"Authorization": "Bearer " + os.environ.get("GATEWAY_API_KEY", "sk-gateway-demo")},
)
print("models:", ", ".join(m.model or "" for m in client.list().models))
model = os.environ.get("GATEWAY_MODEL", "gemma:2b")  # an Ollama tag, or the gateway's name
messages = [{"role": "user", "content": "Name three colours."}]

answer = client.chat(model=model, messages=messages, stream=False)
print(answer.message.content)

for part in client.chat(model=model, messages=messages, stream=True):  # Ollama streams by default
    print(part.message.content, end="", flush=True)
print()
