"""The docs checked against the code (issue 27): every route a page names exists, every port
and base URL agrees with the defaults, and every ``curl`` runs against the demo."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.routing import Match

from gateway.app import create_app
from gateway.config import Settings
from tests.e2e.servers import Server, free_port, running

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "examples/README.md"]
EXAMPLES = sorted(p for p in (ROOT / "examples").iterdir() if p.is_file())
_METHODS = "GET|POST|PATCH|DELETE|PUT"
_ROUTE = re.compile(rf"\b((?:{_METHODS})(?:/(?:{_METHODS}))*) (/[^\s`|,)\]]*)")
#: Named on purpose though not served: the 405 example, and the upstream jobs API's own route.
NOT_SERVED = {("GET", "/v1/chat/completions"), ("POST", "/jobs")}
_LOCAL_URL = re.compile(r"https?://(?:127\.0\.0\.1|localhost|0\.0\.0\.0)(?::(\d+))?")
DEMO_URL = f"http://127.0.0.1:{Settings().server.port}"
#: Ports a page may name besides the gateway's: the emulator run on its own as the docs show it,
#: Redis, PostgreSQL, an OpenTelemetry collector (OTLP/HTTP).
OTHER_PORTS = {8090: "the emulator", 6379: "Redis", 5432: "PostgreSQL", 4318: "OTLP/HTTP"}


#: What the demo answers where a command needs a config file (the demo has none): the route's
#: clear refusal, checked as such.
NEEDS_A_CONFIG = {"/admin/reload": '"code": "invalid_config"'}


def named_routes() -> list[tuple[Path, str, str]]:
    found = []
    for page in PAGES:
        for methods, path in _ROUTE.findall(page.read_text()):
            for method in methods.split("/"):
                found.append((page, method, path))
    return found


def sample_path(path: str) -> str:
    """``/admin/keys/{name}?limit=50`` -> ``/admin/keys/sample``: a path the route must match."""
    path = path.split("?", 1)[0]
    return re.sub(r"\{[^}]*\}|<[^>]*>|\bN\b", "sample", path)


def served(method: str, path: str) -> bool:
    app = create_app(Settings())
    scope = {"type": "http", "method": method, "path": path, "root_path": ""}
    for route in app.routes:
        if "{rest:path}" in getattr(route, "path", ""):  # the catch-alls answer 404/405
            continue
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return True
    return False


def test_the_route_check_sees_a_missing_route() -> None:
    assert served("POST", "/admin/keys") and served("GET", "/v1/responses/sample")
    assert not served("POST", "/v1/embeddings") and not served("GET", "/admin/nothing")


def test_every_route_a_page_names_is_served() -> None:
    routes = named_routes()
    assert len(routes) > 30
    missing = [
        f"{page.name}: {method} {path}"
        for page, method, path in routes
        if (method, path.split("?")[0]) not in NOT_SERVED and not served(method, sample_path(path))
    ]
    assert missing == []


@pytest.mark.parametrize("path", [*PAGES, *EXAMPLES], ids=lambda p: p.name)
def test_every_local_port_agrees_with_the_defaults(path: Path) -> None:
    gateway = Settings().server.port
    for match in _LOCAL_URL.finditer(path.read_text(errors="replace")):
        port = int(match.group(1) or 80)
        assert port == gateway or port in OTHER_PORTS, f"{path.name}: {match.group(0)}"


def curl_commands() -> list[tuple[str, str]]:
    """Every ``curl`` of the pages: fenced shell lines (continuations joined) and inline code."""
    commands = []
    for page in PAGES:
        text = page.read_text()
        for block in re.findall(r"```sh\n(.*?)```", text, re.S):
            joined = re.sub(r"\\\n\s*", " ", block)
            joined = re.sub(r"'[^']*'", lambda m: m.group(0).replace("\n", " "), joined)
            for line in joined.splitlines():
                if line.strip().startswith("curl "):
                    commands.append((page.name, line.split(" # ")[0].strip()))
        for inline in re.findall(r"`(curl [^`]+)`", text):
            commands.append((page.name, inline))
    return commands


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The quick start's gateway: no config, the embedded emulator, the demo keys."""
    tmp = tmp_path_factory.mktemp("docs-demo")
    port = free_port()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp))  # the demo's ledger: here, not in a home
        server = Server(["serve", "--port", str(port)], port, "/healthz", tmp / "demo.log")
    with running(server):
        yield server


@pytest.mark.subprocess
@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
@pytest.mark.parametrize("page,command", curl_commands(), ids=lambda v: str(v)[:60])
def test_every_curl_in_the_docs_runs_against_the_demo(
    page: str, command: str, demo: Server
) -> None:
    assert DEMO_URL in command, f"{page}: {command} does not use the default base URL"
    command = command.replace(DEMO_URL, demo.url)
    env = {**os.environ, "ADMIN_KEY": Settings().emulator.demo_admin_key or ""}
    result = subprocess.run(
        ["bash", "-c", f"{command} --silent --show-error --fail-with-body --max-time 30"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    refusal = next((v for k, v in NEEDS_A_CONFIG.items() if f"{demo.url}{k}" in command), None)
    if refusal is not None:
        assert result.returncode == 22 and refusal in result.stdout, result.stdout
        return
    assert result.returncode == 0, f"{page}: {command}\n{result.stdout}\n{result.stderr}"
