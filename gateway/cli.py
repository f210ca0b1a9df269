"""gateway serve | emulator | keys | teams | usage: the OpenAI-compatible gateway and its tools."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import secrets
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from gateway.config import CONFIG_ENV, ConfigError, ServerSettings, load_settings

if TYPE_CHECKING:
    import socket

    from gateway.config import Settings
    from gateway.ops.metrics import Metrics
    from gateway.ops.metrics_access import MetricsServer


def _serve(args: argparse.Namespace) -> int:
    import math

    import uvicorn

    from gateway.app import create_app, error_shapes, register_secrets
    from gateway.http.connections import guarded_protocol
    from gateway.ops.collector import tune_collector
    from gateway.ops.logs import configure_logging
    from gateway.ops.metrics import Metrics, prepare_multiprocess_dir, use_single_process_mode
    from gateway.ops.shutdown import exit_zero_after_signal

    if args.config:
        os.environ[CONFIG_ENV] = args.config
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    setup = configure_logging(settings.logging)
    register_secrets(setup, settings)
    if multiproc_dir := os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        prepare_multiprocess_dir(multiproc_dir)
    host = args.host or settings.server.host
    port = args.port if args.port is not None else settings.server.port
    if problem := _cannot_listen(host, port):
        print(f"gateway: cannot listen on {host}:{port}: {problem}", file=sys.stderr)
        return 2
    workers = args.workers or settings.server.workers
    try:
        ollama_socket = _ollama_socket(settings, host, port, workers)
    except (OSError, ConfigError) as exc:
        print(f"gateway: cannot serve Ollama's API on ollama.port: {exc}", file=sys.stderr)
        return 2
    if ollama_socket is not None:  # port 0 (tests) becomes the one bound
        bound = settings.ollama.model_copy(update={"port": ollama_socket.getsockname()[1]})
        settings = settings.model_copy(update={"ollama": bound})
    if workers == 1:
        use_single_process_mode()
    metrics = None if workers > 1 else Metrics.create()
    app: object = (
        "gateway.app:app_from_environment"
        if metrics is None
        else create_app(settings, metrics=metrics, logging_setup=setup)
    )
    try:
        metrics_server = _metrics_server(settings.server, host, metrics)
    except (OSError, ConfigError) as exc:
        print(f"gateway: cannot serve metrics on server.metrics_port: {exc}", file=sys.stderr)
        return 2
    if workers == 1:  # each worker of several tunes itself (app_from_environment)
        tune_collector(settings.server)
    with exit_zero_after_signal(), contextlib.ExitStack() as stack:
        if metrics_server is not None:
            stack.callback(metrics_server.close)
        options = dict(
            host=host,
            port=port,
            log_config=setup.uvicorn_log_config,
            access_log=False,
            # Whole seconds; 0 means "cut at once" (None would wait for ever).
            timeout_graceful_shutdown=math.ceil(settings.server.graceful_shutdown_seconds),
            # Longer than clients keep idle connections (the SDKs' httpx: 5 s), so a client
            # never sends a request on a connection the gateway is closing at that moment.
            timeout_keep_alive=settings.server.idle_timeout,
            lifespan="on",
            # httptools with the gateway's header, timeout and connection limits.
            http=guarded_protocol(settings.server, error_shapes()),  # type: ignore[arg-type]
        )
        if ollama_socket is None:
            uvicorn.run(
                app,  # type: ignore[arg-type]
                factory=workers > 1,
                workers=workers if workers > 1 else None,
                **options,  # type: ignore[arg-type]
            )
        else:  # one process, two addresses: the API's and the Ollama door's
            config = uvicorn.Config(app, **options)  # type: ignore[arg-type]
            stack.callback(ollama_socket.close)
            uvicorn.Server(config).run(sockets=[config.bind_socket(), ollama_socket])
    return 0


def _metrics_server(
    server: ServerSettings, host: str, metrics: Metrics | None
) -> MetricsServer | None:
    """The ``server.metrics_port`` listener: this process's metrics, or (``metrics`` None,
    several workers) all workers' merged from ``PROMETHEUS_MULTIPROC_DIR``."""
    if server.metrics_port is None:
        return None
    if metrics is None and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        raise ConfigError("several workers need PROMETHEUS_MULTIPROC_DIR to merge their metrics")
    from gateway.ops.metrics import render_latest, render_merged
    from gateway.ops.metrics_access import MetricsServer

    def render() -> tuple[bytes, str]:
        return render_merged() if metrics is None else render_latest(metrics)

    return MetricsServer(host, server.metrics_port, render, server.metrics_token).start()


def _ollama_socket(settings: Settings, host: str, port: int, workers: int) -> socket.socket | None:
    """The bound socket of ``ollama.port``, or None when it is off."""
    ollama = settings.ollama
    if ollama.port is None:
        return None
    if workers > 1:
        raise ConfigError("ollama.port needs server.workers: 1")
    if ollama.port == port and ollama.port != 0:
        raise ConfigError(f"ollama.port {port} is the API port already")
    import socket

    infos = socket.getaddrinfo(
        ollama.host, ollama.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def _cannot_listen(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be bound (in use, no such address), or None: asked before
    start-up, so a taken port is one line and exit status 2, not uvicorn's log and traceback."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def _emulator(args: argparse.Namespace) -> int:
    from gateway.emulator.server import config_from_args, run_emulator
    from gateway.ops.shutdown import exit_zero_after_signal

    with exit_zero_after_signal():
        run_emulator(args.host, args.port, config_from_args(args))
    return 0


def _keys_generate(args: argparse.Namespace) -> int:
    key = "sk-gw-" + secrets.token_urlsafe(32)
    digest = hashlib.sha256(key.encode()).hexdigest()
    print(f"key:        {key}")
    print(f"key_sha256: {digest}")
    print("Give the key to its user; put only key_sha256 in the config's keys entry.")
    return 0


def _usage(args: argparse.Namespace) -> int:
    import asyncio
    import json

    from gateway.keys.cli import require_config
    from gateway.ledger import format_report, parse_time_range, rows_to_json, store_from_url

    try:
        settings = load_settings(require_config(args.config))
        since, until = parse_time_range(args.since, args.until)
        store = store_from_url(settings.ledger.url, table=settings.ledger.table)
    except (ConfigError, ValueError) as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2

    async def report() -> str:
        await store.open()
        try:
            rows = await store.report(since, until, args.key)
        finally:
            await store.close()
        if args.json:
            return json.dumps(rows_to_json(rows), indent=2)
        return format_report(rows, since, until)

    try:
        text = asyncio.run(report())
    except Exception as exc:  # the database is down, or refuses us: say so, no traceback
        detail = str(exc).strip() or type(exc).__name__
        print(f"gateway: cannot read the usage ledger: {detail}", file=sys.stderr)
        return 1
    print(text)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from gateway import __version__
    from gateway.emulator.server import add_emulator_arguments

    parser = argparse.ArgumentParser(prog="gateway", description=__doc__)
    parser.add_argument("--version", action="version", version=f"gateway {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the OpenAI-compatible gateway")
    serve.add_argument("--config", help=f"YAML config file (default: ${CONFIG_ENV})")
    serve.add_argument("--host", help="bind address (default: server.host)")
    serve.add_argument("--port", type=int, help="port (default: server.port)")
    serve.add_argument("--workers", type=int, help="worker processes (default: server.workers)")
    serve.set_defaults(func=_serve)

    emulator = sub.add_parser("emulator", help="run the jobs-API emulator")
    add_emulator_arguments(emulator)
    emulator.set_defaults(func=_emulator)

    keys = sub.add_parser("keys", help="manage gateway keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    generate = keys_sub.add_parser("generate", help="print a new key and its sha256")
    generate.set_defaults(func=_keys_generate)
    from gateway.keys.cli import add_key_commands, add_team_commands

    add_key_commands(keys_sub)
    add_team_commands(sub)
    from gateway.batches.cli import add_batch_commands

    add_batch_commands(sub)

    usage = sub.add_parser("usage", help="print usage by key and model from the ledger")
    usage.add_argument("--config", help=f"YAML config file (default: ${CONFIG_ENV})")
    usage.add_argument("--since", help="start: ISO date/time, or an age like 24h, 7d (default 24h)")
    usage.add_argument("--until", help="end: ISO date/time (default: now)")
    usage.add_argument("--key", help="only this key name")
    usage.add_argument("--json", action="store_true", help="JSON instead of a table")
    usage.set_defaults(func=_usage)
    return parser


def _chosen_parser(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> argparse.ArgumentParser:
    """The (sub)parser of the command ``args`` chose, e.g. ``keys create``'s own."""
    while parser._subparsers is not None:
        (action,) = (a for a in parser._subparsers._group_actions if a.dest != "help")
        chosen = getattr(args, str(action.dest), None)
        choices = action.choices if isinstance(action.choices, dict) else {}
        if chosen not in choices:
            break
        parser = choices[chosen]
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # said by the subcommand, with its usage (argparse would show the top level's)
        _chosen_parser(parser, args).error(f"unrecognized arguments: {' '.join(unknown)}")
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
