"""An OpenAI-compatible gateway in front of the Distributed LLM Service jobs API."""

__version__ = "0.1.0"
