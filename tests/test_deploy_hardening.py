"""Deploy hardening (issue 12, item 9): a pinned base, a hash-locked install, a NetworkPolicy.

Docker and Kubernetes are not available here: the files are checked statically, against the
code and each other, like tests/test_deploy.py does.
"""

from __future__ import annotations

import re
import tomllib
from typing import Any
from urllib.parse import urlsplit

import yaml
from packaging.requirements import Requirement
from packaging.version import Version

from tests.test_deploy import (
    K8S,
    PORT,
    ROOT,
    dockerfile_instructions,
    instructions,
    k8s,
    load_docs,
)

LOCK = ROOT / "requirements.lock"
_PIN = re.compile(r"^([A-Za-z0-9._-]+)==([^\s;\\]+)", re.M)


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked() -> dict[str, Version]:
    return {_canonical(n): Version(v) for n, v in _PIN.findall(LOCK.read_text(encoding="utf-8"))}


def test_the_base_image_is_pinned_by_digest() -> None:
    args = {a.partition("=")[0]: a.partition("=")[2] for a in instructions("ARG")}
    assert re.fullmatch(r"python:3\.11-slim@sha256:[0-9a-f]{64}", args["PYTHON_IMAGE"])
    assert all(f.split()[0] == "${PYTHON_IMAGE}" for f in instructions("FROM"))


def test_the_image_installs_the_lock_with_hashes_and_nothing_else() -> None:
    runs = [args for word, args in dockerfile_instructions() if word == "RUN"]
    assert any("--require-hashes" in r and "-r requirements.lock" in r for r in runs)
    gateway_install = [r for r in runs if "/wheels/" in r and "install" in r]
    assert gateway_install and all("--no-deps" in r for r in gateway_install)
    copied = [args for word, args in dockerfile_instructions() if word == "COPY"]
    assert any(c.split()[0] == "requirements.lock" for c in copied)
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert "requirements.lock" not in ignored and "*.lock" not in ignored


def test_every_pin_carries_hashes() -> None:
    text = LOCK.read_text(encoding="utf-8")
    blocks = re.split(r"\n(?=[A-Za-z0-9])", text)  # one block per pinned package
    pins = [b for b in blocks if _PIN.match(b)]
    assert len(pins) == len(locked()) > 10
    assert all("--hash=sha256:" in b for b in pins)


def test_the_lock_satisfies_pyproject() -> None:
    """Every runtime dependency is locked at a version its floor allows (floors: no advisory)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    pins = locked()
    for spec in project["dependencies"]:
        requirement = Requirement(spec)
        name = _canonical(requirement.name)
        assert name in pins, f"{name} is not in requirements.lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (spec, pins[name])


def test_the_image_can_trace() -> None:
    """The ``otel`` extra is locked too, so the image exports traces when configured."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    pins = locked()
    for spec in project["optional-dependencies"]["otel"]:
        requirement = Requirement(spec)
        name = _canonical(requirement.name)
        assert name in pins, f"{name} (the otel extra) is not in requirements.lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (spec, pins[name])


def test_floors_exclude_releases_with_known_advisories() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    floors = {
        _canonical(Requirement(s).name): Requirement(s).specifier for s in project["dependencies"]
    }
    for name, vulnerable in {
        "jinja2": "3.1.5",  # CVE-2025-27516, sandbox escape through |attr
        "starlette": "0.49.0",  # CVE-2025-62727 (Range header DoS), CVE-2025-54121
        "h11": "0.15.0",  # CVE-2025-43859, request smuggling
        "idna": "3.6",  # CVE-2024-3651
        "certifi": "2024.6.2",  # CVE-2024-39689
        "anyio": "4.3.0",  # thread race in the event loop getter
    }.items():
        assert not floors[name].contains(vulnerable), name


# ---------------------------------------------------------------- NetworkPolicy


def _policy() -> dict[str, Any]:
    return k8s("NetworkPolicy")


def _allowed_ports(rules: list[dict[str, Any]]) -> set[tuple[int, str]]:
    return {(p["port"], p.get("protocol", "TCP")) for rule in rules for p in rule.get("ports", [])}


def _secret_example() -> dict[str, str]:
    (secret,) = load_docs(K8S / "secret.example.yaml")
    data: dict[str, str] = secret["stringData"]
    return data


def test_the_network_policy_covers_the_gateways_pods_both_ways() -> None:
    policy = _policy()
    pods = k8s("Deployment")["spec"]["template"]["metadata"]["labels"]
    selector = policy["spec"]["podSelector"]["matchLabels"]
    assert selector.items() <= pods.items()
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert _allowed_ports(policy["spec"]["ingress"]) == {(PORT, "TCP")}
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))
    assert "networkpolicy.yaml" in kustomization["resources"]


def test_egress_goes_only_to_dns_the_upstream_redis_and_postgres() -> None:
    egress = _policy()["spec"]["egress"]
    secret = _secret_example()
    redis_port = urlsplit(secret["REDIS_URL"]).port
    ledger_port = urlsplit(secret["LEDGER_URL"]).port
    assert _allowed_ports(egress) == {
        (53, "UDP"),
        (53, "TCP"),
        (443, "TCP"),  # the upstream's base_url is https://
        (redis_port, "TCP"),
        (ledger_port, "TCP"),
    }
    assert all(rule.get("to") for rule in egress), "a rule without 'to' allows every address"
    (public,) = [r for r in egress if any("ipBlock" in t for t in r["to"])]
    block = public["to"][0]["ipBlock"]
    assert block["cidr"] == "0.0.0.0/0"
    assert {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"} <= set(
        block["except"]
    )
    assert _allowed_ports([public]) == {(443, "TCP")}
