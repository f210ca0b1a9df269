"""``examples/`` runs: each Python file and the notebook against a real gateway and emulator.

The files run in this process (``runpy``), so the SDKs they import are loaded once for the
suite; each gets the gateway's address through the environment, as a user would set it. The
Responses and Messages examples skip, saying so, while the gateway answers 404 on their route.
"""

from __future__ import annotations

import json
import runpy
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.e2e.servers import (
    ALICE_KEY,
    Server,
    gateway_config,
    running,
    start_emulator,
    start_gateway,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NEEDS = {
    "openai_responses.py": "/v1/responses",
    "openai_agents.py": "/v1/responses",
    "anthropic_messages.py": "/v1/messages",
}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("examples")
    with (
        running(start_emulator(tmp)) as emulator,
        running(start_gateway(tmp, gateway_config(emulator.url))) as server,
    ):
        yield server


@pytest.fixture
def pointed(gateway: Server, monkeypatch: pytest.MonkeyPatch) -> Server:
    """The environment the examples read, pointing at the test gateway."""
    monkeypatch.setenv("GATEWAY_URL", gateway.url)
    monkeypatch.setenv("GATEWAY_API_KEY", ALICE_KEY)
    monkeypatch.setenv("GATEWAY_MODEL", "gemma-2b")
    monkeypatch.setenv("OPENAI_AGENTS_DISABLE_TRACING", "1")
    return gateway


def skip_unless_served(gateway: Server, route: str) -> None:
    answer = httpx.post(
        gateway.url + route, json={}, headers={"Authorization": f"Bearer {ALICE_KEY}"}
    )
    if answer.status_code == 404:
        pytest.skip(f"needs {route}")


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.py")))
def test_python_example_runs(
    name: str, pointed: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    if name in NEEDS:
        skip_unless_served(pointed, NEEDS[name])
    runpy.run_path(str(EXAMPLES / name), run_name="__main__")
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(lines) >= 2 or name == "openai_agents.py", lines
    assert lines, f"{name} printed nothing"


def test_notebook_cells_run_in_order(pointed: Server, capsys: pytest.CaptureFixture[str]) -> None:
    """As a kernel would: every code cell, top to bottom, in one namespace."""
    notebook = json.loads((EXAMPLES / "notebook.ipynb").read_text())
    assert notebook["nbformat"] == 4
    namespace: dict[str, object] = {"__name__": "__main__"}
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            exec(compile("".join(cell["source"]), "notebook.ipynb", "exec"), namespace)
    out = capsys.readouterr().out
    assert [line[:2] for line in out.splitlines()[-3:]] == ["0 ", "1 ", "2 "]


def test_notebook_runs_headless_in_a_real_kernel(pointed: Server) -> None:
    """Issue 24, item 4: the notebook as Jupyter runs it, in an IPython kernel (nbclient),
    every cell in order, no error; the outputs are the ones each cell promises."""
    nbclient = pytest.importorskip("nbclient", reason="nbclient is in the [test] extra")
    nbformat = pytest.importorskip("nbformat", reason="nbformat is in the [test] extra")
    pytest.importorskip("ipykernel", reason="ipykernel is in the [test] extra")
    notebook = nbformat.read(EXAMPLES / "notebook.ipynb", as_version=4)
    nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3").execute()
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.execution_count for cell in code)
    outputs = [output for cell in code for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    models = code[0].outputs[0]["data"]["text/plain"]
    assert "gemma-2b" in models
    usage = code[1].outputs[-1]["data"]["text/plain"]
    assert usage.startswith("CompletionUsage(") and "prompt_tokens=" in usage
    last = "".join(o.get("text", "") for o in code[-1].outputs if o.output_type == "stream")
    assert [line[:2] for line in last.splitlines()] == ["0 ", "1 ", "2 "]


def test_llm_cli_streams_through_the_gateway(
    pointed: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ``llm`` CLI with examples/llm_extra_openai_models.yaml, as its comments say."""
    click_testing = pytest.importorskip("click.testing")
    llm_cli = pytest.importorskip("llm.cli")
    config = yaml.safe_load((EXAMPLES / "llm_extra_openai_models.yaml").read_text())
    config[0]["api_base"] = pointed.url + "/v1"
    (tmp_path / "extra-openai-models.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "keys.json").write_text(json.dumps({"gateway": ALICE_KEY}))
    monkeypatch.setenv("LLM_USER_PATH", str(tmp_path))
    result = click_testing.CliRunner().invoke(
        llm_cli.cli, ["-m", "gateway-gemma", "--no-log", "Name three colours."]
    )
    assert result.exit_code == 0, result.output
    assert result.output.strip()


def test_codex_and_claude_code_configs_point_at_the_gateway() -> None:
    codex = tomllib.loads((EXAMPLES / "codex_config.toml").read_text())
    provider = codex["model_providers"][codex["model_provider"]]
    assert provider["base_url"] == "http://127.0.0.1:8080/v1"
    assert provider["wire_api"] == "responses"
    lines = (EXAMPLES / "claude_code.env").read_text().splitlines()
    env = dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))
    assert env["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:8080"
    assert env["ANTHROPIC_AUTH_TOKEN"] == "sk-gateway-demo"


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.mjs")))
def test_node_example_is_valid_javascript(name: str) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    done = subprocess.run([node, "--check", str(EXAMPLES / name)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
