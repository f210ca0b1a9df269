"""Low-level operations tools: metrics, logs, traces, shutdown, the live view's records.

Nothing here imports the runtime or a door; the admin routes that read them live in
``gateway.admin``.
"""
