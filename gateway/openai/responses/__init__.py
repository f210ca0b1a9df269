"""OpenAI's Responses API as a front door over the engine.

``wire`` (the request), ``translate`` (request -> engine Conversation), ``run`` (engine
events -> stream events and the ``response`` object), ``render`` (the object's fixed part),
``store`` (stored responses in SQLite or PostgreSQL), ``background`` (runs followed with no
client), ``door`` (what the routes share), ``create`` and ``routes`` (the HTTP routes),
``openapi`` (their part of /openapi.json).
"""
