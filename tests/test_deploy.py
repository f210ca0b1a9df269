"""The container and deployment files parse and agree with the code and with each other.

Docker and Kubernetes are not available here, so everything is checked statically.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from gateway.config import CONFIG_ENV, ServerSettings, Settings, interpolate, parse_settings
from gateway.ops.metrics import Metrics

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"

# What the app serves (gateway/app.py) and where the container listens.
PORT = 8080
HEALTH_PATH = "/healthz"
READY_PATH = "/readyz"
METRICS_PATH = "/metrics"
CONFIG_PATH = "/etc/gateway/config.yaml"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
SERVE_COMMAND = ["gateway", "serve", "--host", "0.0.0.0", "--port", str(PORT)]
PRESTOP_SECONDS = 5

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}")


# ---------------------------------------------------------------- helpers


def yaml_files() -> list[Path]:
    return sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])


def load_docs(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def load_one(path: Path) -> dict[str, Any]:
    (doc,) = load_docs(path)
    assert isinstance(doc, dict)
    return doc


def env_refs(text: str) -> dict[str, bool]:
    """``${NAME}`` references in ``text``: name -> whether it has a default."""
    refs: dict[str, bool] = {}
    for match in _ENV_REF.finditer(text):
        refs[match.group(1)] = refs.get(match.group(1), False) or match.group(2) is not None
    return refs


def validate_config(text: str) -> Settings:
    dummy = {name: f"dummy-{name.lower()}-value" for name in env_refs(text)}
    for name in dummy:
        if name.endswith("SHA256"):
            dummy[name] = "ab" * 32
        elif name.endswith("_URL") and name.startswith("REDIS"):
            dummy[name] = "redis://redis:6379/0"
        elif name.endswith("_URL") and name.startswith("LEDGER"):
            dummy[name] = "postgresql://u:p@db:5432/gateway"
        elif name.endswith("_URL"):
            dummy[name] = "https://upstream.example/v2"
    data = yaml.safe_load(interpolate(text, dummy))
    assert isinstance(data, dict)
    return parse_settings(data)


def metric_sample_names() -> set[str]:
    """Every sample name the gateway's instruments can expose."""
    names: set[str] = set()
    for family in Metrics.create(CollectorRegistry()).registry.collect():
        if family.type == "counter":
            names |= {family.name + "_total", family.name + "_created"}
        elif family.type == "histogram":
            names |= {family.name + s for s in ("_bucket", "_sum", "_count", "_created")}
        else:
            names.add(family.name)
    return names


def metric_refs(text: str) -> set[str]:
    return set(re.findall(r"\bgateway_[a-z0-9_]+\b", text))


def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text(encoding="utf-8")


def header_commands(text: str) -> set[str]:
    """Shell lines shown indented in a file's leading comment, continuations joined."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        if line.startswith("#   "):
            lines.append(line[1:])
    return shell_lines("\n".join(lines))


def shell_lines(block: str) -> set[str]:
    joined = re.sub(r"\\\n\s*", " ", block)
    return {" ".join(line.split()) for line in joined.splitlines() if line.strip()}


def documented_commands(section: str) -> set[str]:
    commands: set[str] = set()
    for block in re.findall(r"```sh\n(.*?)```", section, re.S):
        commands |= shell_lines(block)
    return commands


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", dockerfile())
    result = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            result.append((word.upper(), rest.strip()))
    return result


def instructions(name: str) -> list[str]:
    return [args for word, args in dockerfile_instructions() if word == name]


def final_stage() -> list[tuple[str, str]]:
    items = dockerfile_instructions()
    last_from = max(i for i, (word, _) in enumerate(items) if word == "FROM")
    return items[last_from:]


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for word, args in final_stage():
        if word == "ENV":
            for item in shlex.split(args):
                name, _, value = item.partition("=")
                env[name] = value
    return env


def k8s(kind: str) -> dict[str, Any]:
    for path in K8S.glob("*.yaml"):
        for doc in load_docs(path):
            if doc.get("kind") == kind:
                assert isinstance(doc, dict)
                return doc
    raise AssertionError(f"no {kind} in deploy/k8s")


def container() -> dict[str, Any]:
    (only,) = k8s("Deployment")["spec"]["template"]["spec"]["containers"]
    assert isinstance(only, dict)
    return only


def configmap_config() -> str:
    data = k8s("ConfigMap")["data"]
    (name,) = data
    assert name == Path(CONFIG_PATH).name
    text = data[name]
    assert isinstance(text, str)
    return text


def compose() -> dict[str, Any]:
    return load_one(DEPLOY / "docker-compose.yml")


def seconds(duration: str) -> float:
    match = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", duration)
    assert match and duration, duration
    return int(match.group(1) or 0) * 60 + int(match.group(2) or 0)


# ---------------------------------------------------------------- parsing


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_yaml_file_parses(path: Path) -> None:
    assert load_docs(path), f"{path} is empty"


def test_the_expected_files_exist() -> None:
    expected = [
        "docker-compose.yml",
        "config.yaml",
        "prometheus.yml",
        "grafana/gateway-dashboard.json",
        *(
            f"k8s/{name}.yaml"
            for name in (
                "kustomization",
                "deployment",
                "service",
                "hpa",
                "pdb",
                "configmap",
                "secret.example",
                "servicemonitor",
            )
        ),
    ]
    missing = [name for name in expected if not (DEPLOY / name).is_file()]
    assert not missing


# ---------------------------------------------------------------- Dockerfile


def test_dockerfile_is_multi_stage_on_slim_python() -> None:
    froms = instructions("FROM")
    args = {a.partition("=")[0]: a.partition("=")[2] for a in instructions("ARG")}
    assert len(froms) >= 2
    resolved = [re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], f) for f in froms]
    # The base is pinned by digest (tests/test_deploy_hardening.py checks the pin itself).
    assert all(f.split()[0].split("@")[0] == "python:3.11-slim" for f in resolved), resolved
    assert resolved[0].lower().endswith("as builder")
    assert any(word == "COPY" and "--from=builder" in a for word, a in final_stage())


def test_dockerfile_runs_as_non_root() -> None:
    users = [args for word, args in final_stage() if word == "USER"]
    assert users, "no USER in the final stage"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    assert (
        int(user) == k8s("Deployment")["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
    )


def test_dockerfile_healthcheck_probes_healthz_with_python() -> None:
    (check,) = instructions("HEALTHCHECK")
    command = json.loads(check[check.index("CMD") + 3 :].strip())
    assert command[0] == "python"
    assert f"http://127.0.0.1:{PORT}{HEALTH_PATH}" in command[-1]
    assert "curl" not in check and "wget" not in check


def test_dockerfile_serves_on_the_documented_port() -> None:
    assert instructions("EXPOSE") == [str(PORT)]
    (cmd,) = instructions("CMD")
    assert json.loads(cmd) == SERVE_COMMAND
    assert not instructions("ENTRYPOINT")


def test_dockerfile_environment() -> None:
    env = dockerfile_env()
    assert env[CONFIG_ENV] == CONFIG_PATH
    assert env[MULTIPROC_ENV].startswith("/tmp/")
    assert env["PATH"].startswith("/opt/venv/bin")
    # The multiprocess directory exists and belongs to the runtime user.
    runs = " ".join(args for word, args in final_stage() if word == "RUN")
    assert env[MULTIPROC_ENV] in runs and "chown" in runs


def test_readme_documents_the_container_commands() -> None:
    """The operations reference moved from the README into docs/operations.md (issue 19)."""
    page = ROOT / "docs" / "operations.md"
    assert "(docs/operations.md)" in (ROOT / "README.md").read_text(encoding="utf-8")
    check_documented(page.read_text(encoding="utf-8"))


def check_documented(section: str) -> None:
    """The commands the Dockerfile and the compose file show are the README's, verbatim."""
    documented = documented_commands(section)
    for source in (dockerfile(), (DEPLOY / "docker-compose.yml").read_text(encoding="utf-8")):
        shown = header_commands(source)
        assert shown, "no commands in the file's leading comment"
        assert shown <= documented, shown - documented
    assert " ".join(SERVE_COMMAND) in section
    assert "kubectl apply -k deploy/k8s" in documented
    for command in documented:
        if command.startswith("docker run") and "-v" in command:
            assert f":{CONFIG_PATH}:ro" in command and f"-p {PORT}:{PORT}" in command


def test_the_gateway_command_is_installed() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["project"]["scripts"]["gateway"] == "gateway.cli:main"


def test_dockerignore_keeps_the_build_inputs() -> None:
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", "tests", ".env"} <= ignored
    copied = {a.split()[0] for word, a in dockerfile_instructions() if word == "COPY"}
    copied |= {p for word, a in dockerfile_instructions() if word == "COPY" for p in a.split()[:-1]}
    for needed in ("pyproject.toml", "README.md", "gateway"):
        assert needed in copied
        assert (ROOT / needed).exists(), f"the image build copies {needed}"
        assert needed not in ignored


# ---------------------------------------------------------------- configs


def test_compose_config_validates() -> None:
    settings = validate_config((DEPLOY / "config.yaml").read_text(encoding="utf-8"))
    assert settings.server.port == PORT
    assert settings.keys and settings.models
    assert settings.redis.url is not None
    assert settings.ledger.url.startswith("postgresql://")


def test_configmap_config_validates() -> None:
    settings = validate_config(configmap_config())
    assert settings.server.port == PORT
    assert settings.keys and settings.models


def test_configs_keep_secrets_in_the_environment() -> None:
    for text in ((DEPLOY / "config.yaml").read_text(encoding="utf-8"), configmap_config()):
        data = yaml.safe_load(text)
        for key in data["keys"]:
            assert _ENV_REF.fullmatch(key["upstream_token"])
            assert _ENV_REF.fullmatch(key.get("key") or key["key_sha256"])
        admin = data.get("admin") or {}
        for value in admin.values():
            assert _ENV_REF.fullmatch(value)


def test_compose_passes_every_variable_the_config_needs() -> None:
    text = (DEPLOY / "config.yaml").read_text(encoding="utf-8")
    env = compose()["services"]["gateway"]["environment"]
    required = {name for name, has_default in env_refs(text).items() if not has_default}
    assert required <= set(env)
    assert env[CONFIG_ENV] == CONFIG_PATH
    assert MULTIPROC_ENV in env


def test_secret_example_provides_every_variable_the_configmap_needs() -> None:
    secret = k8s("Secret")
    required = {n for n, has_default in env_refs(configmap_config()).items() if not has_default}
    assert required <= set(secret["stringData"])
    refs = [s["secretRef"]["name"] for s in container()["envFrom"]]
    assert secret["metadata"]["name"] in refs


# ---------------------------------------------------------------- docker compose


def test_compose_services() -> None:
    services = compose()["services"]
    assert {"gateway", "redis", "postgres", "prometheus"} <= set(services)
    gateway = services["gateway"]
    assert gateway["build"]["context"] == ".."
    assert (DEPLOY / gateway["build"]["context"] / gateway["build"]["dockerfile"]).is_file()
    assert f"./config.yaml:{CONFIG_PATH}:ro" in gateway["volumes"]
    assert f"{PORT}:{PORT}" in gateway["ports"]


def test_compose_config_points_at_compose_services() -> None:
    data = yaml.safe_load((DEPLOY / "config.yaml").read_text(encoding="utf-8"))
    services = compose()["services"]
    assert "@postgres:" in data["ledger"]["url"]
    assert data["redis"]["url"].startswith("redis://redis:")
    postgres = services["postgres"]["environment"]
    assert f"//{postgres['POSTGRES_USER']}:" in data["ledger"]["url"]
    assert data["ledger"]["url"].endswith("/" + postgres["POSTGRES_DB"])


def test_compose_stop_grace_outlasts_the_graceful_shutdown() -> None:
    data = yaml.safe_load((DEPLOY / "config.yaml").read_text(encoding="utf-8"))
    grace = ServerSettings.model_validate(data.get("server", {})).graceful_shutdown_seconds
    assert seconds(compose()["services"]["gateway"]["stop_grace_period"]) > grace


def test_prometheus_scrapes_the_gateway() -> None:
    config = load_one(DEPLOY / "prometheus.yml")
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "gateway"]
    assert job.get("metrics_path", "/metrics") == METRICS_PATH
    targets = [t for group in job["static_configs"] for t in group["targets"]]
    assert targets == [f"gateway:{PORT}"]
    mounted = " ".join(compose()["services"]["prometheus"]["volumes"])
    for rule_file in config.get("rule_files", []):
        assert f":{rule_file}:" in mounted


# ---------------------------------------------------------------- Kubernetes


def test_kustomization_lists_the_manifests() -> None:
    kustomization = load_one(K8S / "kustomization.yaml")
    resources = kustomization["resources"]
    assert all((K8S / r).is_file() for r in resources)
    expected = {"deployment", "service", "hpa", "pdb", "configmap", "servicemonitor"}
    assert {f"{n}.yaml" for n in expected} <= set(resources)
    assert "secret.example.yaml" not in resources
    images = {i["name"] for i in kustomization.get("images", [])}
    assert container()["image"] in images


def test_probes_use_the_app_paths_and_port() -> None:
    c = container()
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http": PORT}

    def probe(name: str) -> tuple[str, int]:
        get = c[name]["httpGet"]
        port = get["port"]
        return get["path"], ports[port] if isinstance(port, str) else port

    assert probe("readinessProbe") == (READY_PATH, PORT)
    assert probe("livenessProbe") == (HEALTH_PATH, PORT)
    if "startupProbe" in c:
        assert probe("startupProbe") == (HEALTH_PATH, PORT)


def test_container_command_matches_the_dockerfile() -> None:
    c = container()
    command = [*c.get("command", []), *c.get("args", [])]
    assert command in ([], SERVE_COMMAND)
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env[CONFIG_ENV] == CONFIG_PATH
    assert env[MULTIPROC_ENV] == dockerfile_env()[MULTIPROC_ENV]
    assert "cpu" in c["resources"]["requests"] and "memory" in c["resources"]["limits"]


def test_config_and_metrics_dir_are_mounted() -> None:
    spec = k8s("Deployment")["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m["name"] for m in container()["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    config_volume = volumes[mounts[str(Path(CONFIG_PATH).parent)]]
    assert config_volume["configMap"]["name"] == k8s("ConfigMap")["metadata"]["name"]
    multiproc = dockerfile_env()[MULTIPROC_ENV]
    assert "emptyDir" in volumes[mounts[multiproc]]


def test_termination_grace_covers_prestop_and_shutdown() -> None:
    spec = k8s("Deployment")["spec"]["template"]["spec"]
    data = yaml.safe_load(configmap_config())
    grace = ServerSettings.model_validate(data.get("server", {})).graceful_shutdown_seconds
    assert grace == ServerSettings().graceful_shutdown_seconds  # the manifest follows the code
    command = container()["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = float(command[1])
    assert pre_stop == PRESTOP_SECONDS
    assert spec["terminationGracePeriodSeconds"] > grace + pre_stop


def test_selectors_match_the_pods() -> None:
    deployment = k8s("Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]

    def selects(selector: dict[str, str]) -> bool:
        return all(pod_labels.get(k) == v for k, v in selector.items())

    assert selects(deployment["spec"]["selector"]["matchLabels"])
    service = k8s("Service")
    assert selects(service["spec"]["selector"])
    assert selects(k8s("PodDisruptionBudget")["spec"]["selector"]["matchLabels"])
    (port,) = service["spec"]["ports"]
    assert port["name"] == "http" and port["targetPort"] in ("http", PORT)

    monitor = k8s("ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    labels = service["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in monitor["spec"]["selector"]["matchLabels"].items())
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == port["name"] and endpoint["path"] == METRICS_PATH


def test_hpa_scales_the_deployment_on_cpu() -> None:
    hpa = k8s("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", k8s("Deployment")["metadata"]["name"])
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert hpa["spec"]["minReplicas"] > k8s("PodDisruptionBudget")["spec"]["minAvailable"] - 1


# ---------------------------------------------------------------- dashboards and rules


def test_dashboard_metrics_exist() -> None:
    dashboard = json.loads((DEPLOY / "grafana/gateway-dashboard.json").read_text("utf-8"))
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert exprs
    used = set().union(*(metric_refs(e) for e in exprs))
    known = metric_sample_names()
    assert used <= known, used - known
    # Every instrument has a panel.
    families = {f.name for f in Metrics.create(CollectorRegistry()).registry.collect()}
    shown = {f for f in families if any(name.startswith(f) for name in used)}
    assert families - shown <= {"gateway_build_info"}


def test_prometheus_rule_metrics_exist() -> None:
    known = metric_sample_names()
    for path in (DEPLOY / "prometheus.yml", DEPLOY / "gateway-rules.yml"):
        text = path.read_text(encoding="utf-8")
        assert metric_refs(text) <= known, metric_refs(text) - known
    rules = load_one(DEPLOY / "gateway-rules.yml")
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    assert any(metric_refs(e) for e in exprs)


def test_metric_name_check_is_not_vacuous() -> None:
    assert "gateway_requests_total" in metric_sample_names()
    assert "gateway_request_total" not in metric_sample_names()
    assert "gateway_request_duration_seconds_bucket" in metric_sample_names()


# ---------------------------------------------------------------- the code serves what they use


def test_app_serves_the_probe_and_metrics_paths() -> None:
    from starlette.routing import Route

    from gateway.app import create_app

    app = create_app(Settings())  # nothing starts before the lifespan runs
    paths = {route.path for route in app.routes if isinstance(route, Route)}
    assert {HEALTH_PATH, READY_PATH, METRICS_PATH} <= paths


def test_cli_accepts_the_container_command() -> None:
    from gateway.cli import build_parser

    args = build_parser().parse_args(SERVE_COMMAND[1:])
    assert (args.command, args.host, args.port) == ("serve", "0.0.0.0", PORT)
