"""ASGI plumbing every door shares, knowing no door and no runtime: bodies, responses, the SSE
encoder, error shapes by path, middleware, connection limits (imports only config and errors;
the request lifecycle that uses them is the front desk, :mod:`gateway.serving`)."""
