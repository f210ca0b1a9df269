"""Batches: uploaded files, durable batches and the runner that answers their lines.

Layers: :mod:`.jsonl` (pure: splitting an upload into lines under caps), :mod:`.files` and
:mod:`.store` (the database), :mod:`.lines` (a line planned and answered through the front
desk), :mod:`.runner` (leases, retries, expiry). The doors' routes live in
``gateway/openai/files.py``, ``gateway/openai/batches.py`` and ``gateway/anthropic/batches.py``;
the admin door's (every key's batches) in ``gateway/admin/batches.py``. The stores speak to
their database through ``gateway/db.py``, like the ledger's and the Responses store.
"""
