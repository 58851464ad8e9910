"""docker-compose.yml (Docker does not run here): every service is wired to healthy dependencies and runs
commands that exist in the package."""

from __future__ import annotations

import shlex
from pathlib import Path

import yaml
from typer.testing import CliRunner

from scanner.cli import app

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def test_backing_services_have_healthchecks() -> None:
    for name in ("redis", "postgres"):
        assert "healthcheck" in SERVICES[name], name


def test_scanner_services_wait_for_healthy_dependencies() -> None:
    for name, service in SERVICES.items():
        for dependency, condition in service.get("depends_on", {}).items():
            expected = "service_completed_successfully" if dependency == "migrate" else "service_healthy"
            assert condition["condition"] == expected, (name, dependency)
            assert dependency in SERVICES
    for name in ("worker", "worker-gpu", "scanner"):
        assert set(SERVICES[name]["depends_on"]) == {"redis", "postgres", "migrate"}, name


def test_every_scanner_command_exists() -> None:
    runner = CliRunner()
    for name, service in SERVICES.items():
        command = service.get("command")
        entry = service.get("entrypoint", [])
        argv = list(entry) + (shlex.split(command) if isinstance(command, str) else list(command or []))
        if argv[:1] != ["scanner"]:
            continue
        subcommand = [a for a in argv[1:] if not a.startswith("-")][:2]
        words = subcommand if subcommand[:1] == ["db"] else subcommand[:1]
        result = runner.invoke(app, [*words, "--help"])
        assert result.exit_code == 0, (name, argv, result.output)
        for option in (a.split("=")[0] for a in argv if a.startswith("--") and a != "--help"):
            assert option in result.output, (name, option)


def test_gpu_worker_reserves_a_gpu_and_runs_one_solo_process() -> None:
    gpu = SERVICES["worker-gpu"]
    assert gpu["profiles"] == ["gpu"]
    device = gpu["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert "solo" in gpu["command"] and gpu["environment"]["SCANNER_DEVICE"] == "cuda"


def test_secrets_are_required_not_defaulted() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    assert "${POSTGRES_PASSWORD:?" in text
    assert SERVICES["postgres"]["environment"]["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")


def test_dockerfile_installs_the_package_and_pins_torch() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'TORCH_SPEC="torch==2.13.0"' in dockerfile
    for folder in ("scanner", "worker", "training", "migrations"):
        assert f"COPY {folder} ./{folder}" in dockerfile
    assert "USER fauxscan" in dockerfile


def test_review_app_needs_a_token_and_publishes_on_loopback_only() -> None:
    review = SERVICES["review"]
    assert review["environment"]["SCANNER_SERVE_TOKEN"].startswith("${SCANNER_SERVE_TOKEN:?")
    assert all(port.startswith("127.0.0.1:") for port in review["ports"])
    assert "0.0.0.0" in review["command"]  # inside the container; refused by `scanner serve` without the token
