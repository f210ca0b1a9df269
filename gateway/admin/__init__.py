"""The operators' door: usage, reload, keys and teams, the live view, health probes.

A door like ``openai`` and ``anthropic``: its routes read the :class:`~gateway.runtime.Runtime`,
while ``gateway.ops`` below it keeps the low-level tools (metrics, logs, traces, shutdown)
that import no runtime.
"""
