"""The admin door's routes, in one list the app mounts: probes, usage, reload, keys, live,
every key's batches."""

from __future__ import annotations

from starlette.routing import BaseRoute, Route

from gateway.admin import batches, keys
from gateway.admin.health import healthz, readyz
from gateway.admin.live import admin_live
from gateway.admin.usage import admin_reload, admin_usage, own_usage


def admin_routes() -> list[BaseRoute]:
    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/v1/usage", own_usage, methods=["GET"]),
        Route("/admin/usage", admin_usage, methods=["GET"]),
        Route("/admin/reload", admin_reload, methods=["POST"]),
        *keys.ROUTES,
        Route("/admin/live", admin_live, methods=["GET"]),
        *batches.routes(),
    ]
