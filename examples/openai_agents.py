"""An OpenAI Agents SDK agent whose model is served by the gateway (``/v1/responses``).

Tracing to OpenAI is switched off: the gateway's key means nothing there.

    python3 dev.py example examples/openai_agents.py
    (GATEWAY_URL, GATEWAY_API_KEY and GATEWAY_MODEL override the demo defaults)
"""

import os

from agents import Agent, Runner, set_default_openai_client, set_tracing_disabled
from openai import AsyncOpenAI

set_tracing_disabled(True)
set_default_openai_client(
    AsyncOpenAI(
        base_url=os.environ.get("GATEWAY_URL", "http://127.0.0.1:8080") + "/v1",
        api_key=os.environ.get("GATEWAY_API_KEY", "sk-gateway-demo"),
    ),
    use_for_tracing=False,
)

agent = Agent(
    name="Assistant",
    instructions="Answer in one short sentence.",
    model=os.environ.get("GATEWAY_MODEL", "gemma-2b"),
)
result = Runner.run_sync(agent, "Name three colours.")
print(result.final_output)
