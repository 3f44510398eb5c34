"""Docker Compose and Dockerfiles, checked statically and against the code they run.

Compose cannot run here, so: Debian's ``docker-compose config`` validates both variants when
it is installed, and the checks below keep the files truthful (env names that Settings
reads, commands that exist, ports that match).
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from api.cli import add_service_commands
from api.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "docker-compose.yml"
CPU_OVERRIDE = ROOT / "docker" / "docker-compose.cpu.yml"
VARIANTS = {"gpu": [BASE], "cpu": [BASE, CPU_OVERRIDE]}
EXTRA_ENV = {"TORCH_FORCE_WEIGHTS_ONLY_LOAD"}  # read by torch, not by Settings


def _resolved(files: list[Path]) -> dict:
    """The merged configuration: from docker-compose when present, else merged here."""
    return _resolved_cached(tuple(files))


@functools.cache
def _resolved_cached(files: tuple[Path, ...]) -> dict:
    if shutil.which("docker-compose"):
        args = ["docker-compose", "--project-directory", str(ROOT)]
        for path in files:
            args += ["-f", str(path)]
        done = subprocess.run([*args, "config"], capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
        return yaml.safe_load(done.stdout)
    return _merge_by_hand(files)


def _merge_by_hand(files: list[Path]) -> dict:
    config: dict = {"services": {}, "volumes": {}}
    for path in files:
        data = yaml.safe_load(path.read_text())
        for name, service in data.get("services", {}).items():
            merged = {**config["services"].get(name, {}), **service}
            for env_file in _as_list(merged.pop("env_file", [])):
                merged["environment"] = {**_env_file(ROOT / env_file),
                                         **merged.get("environment", {})}
            config["services"][name] = merged
        config["volumes"].update(data.get("volumes") or {})
    return config


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def _env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines()
             if line.strip() and not line.startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


def _settings_env_names() -> set[str]:
    names = set()
    for name, field in Settings.model_fields.items():
        names.add(f"SNNCONV_{name.upper()}")
        alias = field.validation_alias
        if alias is not None:
            names.update(choice for choice in alias.choices if choice.isupper())
    return names


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def compose(request) -> dict:
    return _resolved(VARIANTS[request.param])


def _snnconv_services(compose: dict) -> dict[str, dict]:
    return {name: service for name, service in compose["services"].items()
            if name not in {"redis", "postgres"}}


def _active_workers(compose: dict) -> dict[str, dict]:
    """Worker services that `up` starts (not parked behind a profile)."""
    return {name: service for name, service in compose["services"].items()
            if name.startswith("worker") and not service.get("profiles")}


def test_env_names_are_settings_and_their_values_validate(compose, monkeypatch):
    known = _settings_env_names() | EXTRA_ENV
    for name, service in _snnconv_services(compose).items():
        environment = service["environment"]
        assert set(environment) <= known, f"{name}: unknown {set(environment) - known}"
        for key in list(_settings_env_names()):
            monkeypatch.delenv(key, raising=False)
        for key, value in environment.items():
            monkeypatch.setenv(key, str(value))
        settings = Settings()
        assert settings.environment == "production"
        assert settings.broker_url.startswith("redis://redis:6379/")
        assert settings.sqlalchemy_url.startswith("postgresql+psycopg://")


def test_api_command_parses_and_ports_agree(compose):
    api = compose["services"]["api"]
    command = api["command"]
    assert command[:3] == ["python", "-m", "api.cli"]
    import argparse

    parser = argparse.ArgumentParser()
    add_service_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(command[3:])
    assert args.command == "serve" and args.with_worker is False and args.host == "0.0.0.0"
    published = [str(port.get("target") if isinstance(port, dict) else port).split(":")[-1]
                 for port in api["ports"]]
    assert str(args.port) in published
    assert f"127.0.0.1:{args.port}/readyz" in " ".join(api["healthcheck"]["test"])
    dockerfile = (ROOT / "docker" / "api.Dockerfile").read_text()
    assert f"EXPOSE {args.port}" in dockerfile
    assert _dockerfile_cmd(dockerfile) == command


def test_worker_runs_the_celery_app_on_the_configured_queue(compose):
    workers = _active_workers(compose)
    assert workers, "no active worker service"
    for name, service in workers.items():
        command = service["command"]
        assert command[:4] == ["celery", "-A", "worker.celery_app", "worker"], name
        assert command[command.index("-Q") + 1] == Settings().queue
    from worker import celery_app

    assert celery_app.TASK_NAME in celery_app.app.tasks or celery_app.app.conf.include
    gpu_dockerfile = (ROOT / "docker" / "worker.Dockerfile").read_text()
    assert _dockerfile_cmd(gpu_dockerfile) == compose["services"]["worker"]["command"]


def test_gpu_variant_reserves_an_nvidia_gpu_and_cpu_variant_does_not():
    gpu = _resolved(VARIANTS["gpu"])["services"]["worker"]
    device = gpu["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert int(device["count"]) == 1
    cpu = _resolved(VARIANTS["cpu"])["services"]
    assert cpu["worker"]["profiles"] == ["gpu"]  # parked unless the gpu profile is asked for
    assert "deploy" not in cpu["worker-cpu"]


def test_redis_keeps_every_message(compose):
    redis = compose["services"]["redis"]
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command and "--maxmemory-policy noeviction" in command
    assert "/data" in {_volume(entry)[1] for entry in redis["volumes"]}


def test_dependencies_wait_for_health_checks(compose):
    services = compose["services"]
    for name, service in _snnconv_services(compose).items():
        for dependency, condition in service["depends_on"].items():
            assert condition == {"condition": "service_healthy"}, (name, dependency)
            assert "healthcheck" in services[dependency], dependency


def test_volumes_for_models_results_and_read_only_datasets(compose):
    settings_dirs = {"/data/uploads", "/data/results"}
    for name, service in _snnconv_services(compose).items():
        volumes = [_volume(v) for v in service["volumes"]]
        targets = {target for _source, target, _ro in volumes}
        assert settings_dirs <= targets, name
        datasets = [v for v in volumes if v[1] == service["environment"]["SNNCONV_DATASETS_DIR"]]
        assert datasets and datasets[0][2], f"{name}: datasets must be mounted read-only"


def _volume(entry) -> tuple[str, str, bool]:
    if isinstance(entry, dict):
        return str(entry.get("source")), entry["target"], bool(entry.get("read_only"))
    body, mode = entry.rsplit(":", 1) if entry.endswith((":ro", ":rw")) else (entry, "rw")
    source, target = body.rsplit(":", 1)  # the source may hold ${VAR:-default}
    return source, target, mode == "ro"


def _dockerfile_cmd(text: str) -> list[str]:
    match = re.search(r"^CMD (\[.*\])\s*$", text, re.MULTILINE)
    assert match, "Dockerfile has no exec-form CMD"
    return json.loads(match.group(1))


def test_compose_validates_with_docker_compose():
    if not shutil.which("docker-compose"):
        pytest.skip("Debian's docker-compose is not installed (apt-get install docker-compose)")
    for files in VARIANTS.values():
        args = ["docker-compose", "--project-directory", str(ROOT)]
        for path in files:
            args += ["-f", str(path)]
        done = subprocess.run([*args, "config", "--quiet"], capture_output=True, text=True,
                              check=False)
        assert done.returncode == 0, done.stderr
