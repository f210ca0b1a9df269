"""The processes a benchmark run needs, on loopback: the emulator, the gateway, LiteLLM.

Each is a subprocess whose output goes to a log file in the run's folder; :class:`Server`
waits until it answers, and measures its process tree (CPU seconds, resident memory) with
psutil, so a supervisor and its workers count together.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import yaml

from tests.e2e.servers import free_port, wait_ready

ROOT = Path(__file__).resolve().parent.parent
BASELINE_DIR = ROOT / "bench" / "litellm_baseline"
UPSTREAM_TOKEN = "bench-upstream-token"
MODEL = "gemma-2b"


def venv_bin(name: str) -> str:
    """A console script installed beside the running interpreter (the venv's bin/)."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


@dataclass(frozen=True, slots=True)
class Usage:
    """CPU seconds (user + system) and resident bytes of a process tree at one instant."""

    cpu: float
    rss: int
    processes: int


def tree_usage(pid: int) -> Usage:
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return Usage(0.0, 0, 0)
    cpu, rss, alive = 0.0, 0, 0
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            times = proc.cpu_times()
            cpu += times.user + times.system
            rss += proc.memory_info().rss
            alive += 1
    return Usage(cpu, rss, alive)


class Server:
    """A subprocess serving HTTP on 127.0.0.1; ready once ``ready_path`` answers < 500."""

    def __init__(
        self,
        name: str,
        args: list[str],
        port: int,
        ready_path: str,
        log: Path,
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        ready_timeout: float = 60.0,
    ) -> None:
        self.name = name
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        self._out = log.open("wb")
        self.process = subprocess.Popen(
            args,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            cwd=cwd,
            start_new_session=True,  # a Ctrl-C of the bench reaches only the bench
        )
        try:
            self._wait_ready(ready_path, ready_timeout)
        except BaseException:
            self.stop()
            raise

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def ports(self) -> list[int]:
        return [self.port]

    @property
    def urls(self) -> list[str]:
        return [self.url]

    def usage(self) -> Usage:
        return tree_usage(self.pid)

    def pids(self) -> list[int]:
        with contextlib.suppress(psutil.NoSuchProcess):
            root = psutil.Process(self.pid)
            return [self.pid, *(p.pid for p in root.children(recursive=True))]
        return []

    def _wait_ready(self, path: str, limit: float) -> None:
        problem = wait_ready(self.process, self.url + path, limit, interval=0.1)
        if problem is not None:
            raise RuntimeError(f"{self.name} {problem}; see {self.log}")

    def stop(self, wait: float = 15.0) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(wait)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._out.close()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Replicas:
    """Several servers on one machine with no balancer in front: the load generator spreads
    its clients over ``ports``, and they are measured as one server under test (CPU and
    resident memory summed over every process of every replica; metrics over every URL)."""

    name = "gateway"

    def __init__(self, members: list[Server]) -> None:
        self.members = members

    @property
    def pid(self) -> int:
        return self.members[0].pid

    @property
    def port(self) -> int:
        return self.members[0].port

    @property
    def url(self) -> str:
        return self.members[0].url

    @property
    def log(self) -> Path:
        return self.members[0].log

    @property
    def ports(self) -> list[int]:
        return [m.port for m in self.members]

    @property
    def urls(self) -> list[str]:
        return [m.url for m in self.members]

    def usage(self) -> Usage:
        parts = [m.usage() for m in self.members]
        return Usage(
            sum(u.cpu for u in parts), sum(u.rss for u in parts), sum(u.processes for u in parts)
        )

    def pids(self) -> list[int]:
        return [pid for m in self.members for pid in m.pids()]

    def stop(self, wait: float = 15.0) -> None:
        for member in self.members:
            member.stop(wait)

    def __enter__(self) -> Replicas:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def placement() -> tuple[set[int], set[int]] | None:
    """(cores for the server under test, cores for the emulator and the load generator).

    On a shared machine the scheduler runs a woken emulator or load generator on the core of
    the process that woke it, preempting the server mid-burst: a write to the emulator then
    took ~170 us of the gateway's time instead of ~20. The standard cure of benchmarks is to
    keep the load apart from what it measures: the server gets the first core, the rest
    get the others. None on a single core (nothing to separate).
    """
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return None
    return {cores[0]}, set(cores[1:])


def pin(pids: list[int], cores: set[int] | None) -> None:
    """Keep these processes (and the threads and children they start later) on ``cores``."""
    if cores is None:
        return
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.sched_setaffinity(pid, cores)


def start_emulator(logs: Path, name: str, queue_seconds: float = 0.5) -> Server:
    port = free_port()
    args = [venv_bin("gateway"), "emulator", "--port", str(port), "--token", UPSTREAM_TOKEN]
    args += ["--queue-seconds", str(queue_seconds), "--retention-seconds", "120"]
    return Server("emulator", args, port, "/emulator/health", logs / f"{name}-emulator.log")


def gateway_settings(
    upstream: str, key: str, tick: float, workers: int, ledger: Path
) -> dict[str, Any]:
    """The gateway config the benchmark uses: one key, one account, defaults elsewhere."""
    return {
        "server": {"workers": workers, "graceful_shutdown_seconds": 2},
        "upstream": {"base_url": upstream, "poll_interval": tick},
        "models": [{"name": MODEL, "tag": "gemma:2b"}],
        "keys": [{"name": "bench", "key": key, "upstream_token": UPSTREAM_TOKEN}],
        "limits": {"default_deadline": 600},
        "ledger": {"url": f"sqlite:///{ledger}"},
        "logging": {"format": "json", "level": "info"},
    }


@dataclass(slots=True)
class System:
    """A server under test as the load generator sees it."""

    name: str  # "gateway" | "litellm"
    server: Server | Replicas
    api_key: str
    model: str = MODEL


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["server.gc_freeze=false"]`` -> ``{"server.gc_freeze": False}`` (values are YAML)."""
    overrides: dict[str, Any] = {}
    for item in items:
        field, sep, value = item.partition("=")
        if not sep or not field:
            raise SystemExit(f"--set wants FIELD=YAML, got {item!r}")
        overrides[field] = yaml.safe_load(value)
    return overrides


def apply_overrides(settings: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set each dotted field of ``overrides`` in ``settings`` (which it changes and returns)."""
    for field, value in overrides.items():
        *parents, last = field.split(".")
        node = settings
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return settings


def start_gateway(
    logs: Path,
    name: str,
    upstream: str,
    tick: float,
    workers: int,
    overrides: dict[str, Any] | None = None,
) -> System:
    config, key = _write_config(logs, name, upstream, tick, workers, overrides)
    server = _serve(logs, name, config)
    if workers > 1:
        _wait_workers(server, workers)
    return System("gateway", server, key)


def start_replicas(
    logs: Path,
    name: str,
    upstream: str,
    tick: float,
    replicas: int,
    overrides: dict[str, Any] | None = None,
) -> System:
    """``replicas`` one-worker gateways with one config (so one Redis prefix and one ledger,
    as replicas behind a balancer would share), each on its own port."""
    config, key = _write_config(logs, name, upstream, tick, 1, overrides)
    members: list[Server] = []
    try:
        for n in range(replicas):
            members.append(_serve(logs, f"{name}-r{n}", config))
    except BaseException:
        for member in members:
            member.stop()
        raise
    return System("gateway", Replicas(members), key)


def _write_config(
    logs: Path,
    name: str,
    upstream: str,
    tick: float,
    workers: int,
    overrides: dict[str, Any] | None,
) -> tuple[Path, str]:
    """The generated config file of a run and the client key it accepts."""
    key = "sk-bench-" + secrets.token_urlsafe(16)
    config = logs / f"{name}-gateway.yaml"
    ledger = logs / f"{name}-usage.db"
    settings = apply_overrides(
        gateway_settings(upstream, key, tick, workers, ledger), overrides or {}
    )
    config.write_text(yaml.safe_dump(settings))
    return config, key


def _serve(logs: Path, name: str, config: Path) -> Server:
    """``gateway serve`` on a free port, with a metrics folder of its own (a process clears
    its folder at start, so replicas must not share one)."""
    port = free_port()
    metrics_dir = logs / f"{name}-metrics"
    metrics_dir.mkdir(exist_ok=True)
    args = [venv_bin("gateway"), "serve", "--config", str(config), "--port", str(port)]
    return Server(
        "gateway",
        args,
        port,
        "/healthz",
        logs / f"{name}-gateway.log",
        env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)},
    )


def _wait_workers(server: Server, workers: int, limit: float = 30.0) -> None:
    """uvicorn's supervisor answers /healthz as soon as one worker does; wait for all."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if server.usage().processes >= workers + 1:
            time.sleep(2.0)  # each worker still runs its lifespan
            return
        time.sleep(0.1)
    raise RuntimeError(f"the gateway did not start {workers} workers; see {server.log}")


#: A virtualenv holding ``litellm[proxy]`` for the baseline, kept apart from the gateway's:
#: LiteLLM's proxy pins its own FastAPI, uvicorn, httpx and pydantic releases.
LITELLM_VENV_ENV = "BENCH_LITELLM_VENV"


def litellm_command(venv: str | os.PathLike[str] | None = None) -> str | None:
    """The ``litellm`` command: ``venv``'s (default ``$BENCH_LITELLM_VENV``), else the one
    beside this interpreter; None when there is none. (Not imported here: importing litellm
    reaches for the internet.)"""
    venv = venv or os.environ.get(LITELLM_VENV_ENV)
    if venv:
        candidate = Path(venv) / "bin" / "litellm"
        return str(candidate) if candidate.exists() else None
    here = Path(venv_bin("litellm"))
    return str(here) if importlib.util.find_spec("litellm") is not None and here.exists() else None


def start_litellm(
    logs: Path, name: str, upstream: str, tick: float, command: str | None = None
) -> System:
    """The LiteLLM proxy (``command``, default :func:`litellm_command`) with the custom jobs
    provider of ``bench/litellm_baseline/``."""
    command = command or litellm_command()
    if command is None:
        raise RuntimeError(f"litellm is not installed (set {LITELLM_VENV_ENV})")
    port = free_port()
    key = "sk-bench-" + secrets.token_urlsafe(16)
    env = {
        "JOBS_API_BASE": upstream,
        "JOBS_API_TOKEN": UPSTREAM_TOKEN,
        "JOBS_POLL_INTERVAL": str(tick),
        "LITELLM_MASTER_KEY": key,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no fetch of the price list from the internet
        "LITELLM_TELEMETRY": "False",
    }
    args = [command, "--config", "config.yaml", "--host", "127.0.0.1"]
    args += ["--port", str(port), "--num_workers", "1"]
    server = Server(
        "litellm",
        args,
        port,
        "/health/liveliness",
        logs / f"{name}-litellm.log",
        env=env,
        cwd=BASELINE_DIR,
        ready_timeout=120.0,
    )
    return System("litellm", server, key)
