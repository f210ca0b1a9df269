"""Ollama's native API (``/api/chat``, ``/api/generate``, ``/api/tags`` ...): the third door."""
