"""The web console: static files (``static/``) served by the gateway itself, and their routes."""
