"""ASGI plumbing every door shares, knowing no door and no runtime: bodies, responses, the SSE
encoder, error shapes by path, middleware, connection limits (imports only config and errors;
``serving.py`` is the front desk on its way out of here, issue 22)."""
