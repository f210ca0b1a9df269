"""The Distributed LLM Service jobs API: wire shapes, client, and the coalescing poller."""
