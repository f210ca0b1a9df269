"""The console's files and headers, in process: CSP everywhere, HEAD /, off when configured."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from importlib import resources

import httpx
import pytest

from gateway.config import Settings
from tests.inprocess import client as http_client
from tests.inprocess import started

STATIC = resources.files("gateway.console").joinpath("static")


def settings(**server: object) -> Settings:
    return Settings.model_validate(
        {
            "server": server,
            "upstream": {"base_url": "http://127.0.0.1:9"},
            "models": [{"name": "gemma-2b", "tag": "gemma:2b"}],
            "keys": [{"name": "alice", "key": "sk-test-alice-0123", "upstream_token": "tok-a"}],
            "ledger": {"url": "sqlite:///:memory:"},
        }
    )


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with started(settings()) as app, http_client(app) as http:
        yield http


def assert_guarded(response: httpx.Response) -> None:
    csp = response.headers["content-security-policy"]
    directives = dict(part.strip().split(" ", 1) for part in csp.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == "'self'"
    assert directives["connect-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert "unsafe" not in csp
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-content-type-options"] == "nosniff"


async def test_home_answers_get_and_head_with_the_csp(client: httpx.AsyncClient) -> None:
    browser = {"accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    page = await client.get("/", headers=browser)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert_guarded(page)
    probe = await client.head("/", headers=browser)
    assert probe.status_code == 200
    assert probe.content == b""
    assert_guarded(probe)


async def test_home_is_ollamas_probe_answer_for_clients_that_are_not_browsers(
    client: httpx.AsyncClient,
) -> None:
    for method in ("GET", "HEAD"):
        probe = await client.request(method, "/", headers={"accept": "*/*"})
        assert probe.status_code == 200
        assert probe.headers["content-type"].startswith("text/plain")
        assert "content-security-policy" not in probe.headers
    assert (await client.get("/")).text == "Ollama is running"


async def test_every_module_the_page_loads_is_served_with_the_csp(
    client: httpx.AsyncClient,
) -> None:
    names = {entry.name for entry in STATIC.iterdir()}
    assert {"index.html", "app.js", "style.css"} <= names
    for name in names - {"index.html"}:
        response = await client.get(f"/console/{name}")
        assert response.status_code == 200, name
        assert_guarded(response)
        assert response.content == STATIC.joinpath(name).read_bytes()
    module = await client.get("/console/app.js")
    assert module.headers["content-type"].startswith("text/javascript")
    again = await client.get("/console/app.js", headers={"if-none-match": module.headers["etag"]})
    assert again.status_code == 304


@pytest.mark.parametrize("path", ["/console/nope.js", "/console/..%2Fconfig.py", "/console/"])
async def test_unknown_files_are_a_404_in_the_error_shape(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.get(path)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "unknown_url"


async def test_console_off_leaves_no_page() -> None:
    async with started(settings(console=False)) as app, http_client(app) as http:
        html = {"accept": "text/html"}  # even a browser: the console is off
        probe = await http.get("/", headers=html)  # the plain answer for clients probing it
        assert probe.status_code == 200 and probe.text == "Ollama is running"
        assert "content-security-policy" not in probe.headers
        assert (await http.get("/console/app.js")).status_code == 404
        assert (await http.get("/healthz")).status_code == 200


def test_every_import_and_link_names_a_served_file() -> None:
    names = {entry.name for entry in STATIC.iterdir()}
    html = STATIC.joinpath("index.html").read_text()
    for ref in re.findall(r'(?:src|href)="/console/([^"]+)"', html):
        assert ref in names
    for entry in STATIC.iterdir():
        if entry.name.endswith(".js"):
            for ref in re.findall(r"from '\./([^']+)'", entry.read_text()):
                assert ref in names, (entry.name, ref)


#: Ways for text to become markup or code; the console uses none of them.
SINKS = re.compile(
    r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function|"
    r"setTimeout\(\s*['\"`]|\son[a-z]+=|<script>|javascript:"
)


def test_no_script_turns_text_into_markup() -> None:
    for entry in STATIC.iterdir():
        text = entry.read_text()
        if entry.name.endswith(".html"):
            assert "<script>" not in text and not re.search(r"\son[a-z]+=", text), entry.name
            assert " style=" not in text, entry.name
        else:
            assert not SINKS.search(text), (entry.name, SINKS.search(text))
