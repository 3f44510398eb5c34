"""Docker Compose and Dockerfiles, checked statically and against the code they run.

Compose cannot run here, so: Debian's ``docker-compose config`` validates both variants when
it is installed (``.ci/run`` installs it, and under CI=true its absence fails), and the checks
below keep the files truthful (env names that Settings reads, commands that exist, ports that
match, a database password that must be given).
"""

from __future__ import annotations

import functools
import json
import os
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
PASSWORD = "test-Secret-9"  # POSTGRES_PASSWORD for these checks; Compose has no default
# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}; $$ is a literal $.
VARIABLE = re.compile(r"\$\$|\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def _compose_args(files) -> list[str]:
    args = ["docker-compose", "--project-directory", str(ROOT)]
    for path in files:
        args += ["-f", str(path)]
    return args


def _compose_env(password: str | None) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "POSTGRES_PASSWORD"}
    return env if password is None else {**env, "POSTGRES_PASSWORD": password}


def _resolved(files: list[Path], password: str = PASSWORD) -> dict:
    """The merged configuration: from docker-compose when present, else merged here."""
    return _resolved_cached(tuple(files), password)


@functools.cache
def _resolved_cached(files: tuple[Path, ...], password: str) -> dict:
    if shutil.which("docker-compose"):
        done = subprocess.run([*_compose_args(files), "config"], capture_output=True, text=True,
                              check=False, env=_compose_env(password))
        assert done.returncode == 0, done.stderr
        return yaml.safe_load(done.stdout)
    return _merge_by_hand(files, {"POSTGRES_PASSWORD": password})


def _interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable substitution, for the forms the files use."""
    def substitute(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$$"  # left escaped, as `docker-compose config` prints it
        name, op, arg = match.group("name", "op", "arg")
        value = env.get(name)
        missing = value is None or (value == "" and op is not None and op.startswith(":"))
        if not missing:
            return value
        if op is not None and op.endswith("?"):
            raise ValueError(f"missing mandatory value for {name}: {arg}")
        return arg if op is not None else ""
    return VARIABLE.sub(substitute, text)


def _merge_by_hand(files: list[Path], env: dict[str, str]) -> dict:
    config: dict = {"services": {}, "volumes": {}}
    for path in files:
        data = yaml.safe_load(_interpolate(path.read_text(), env))
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
    services = {name: service for name, service in compose["services"].items()
                if name not in {"redis", "postgres"}}
    assert {"api", "worker"} <= set(services), sorted(services)  # no check passes on nothing
    return services


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


def test_the_api_image_builds_the_example_models_into_its_examples_folder():
    import argparse

    from api.settings import Settings

    dockerfile = (ROOT / "docker" / "api.Dockerfile").read_text()
    runs = [line.split("RUN ", 1)[1] for line in dockerfile.splitlines()
            if line.startswith("RUN ") and "api.cli examples" in line]
    assert len(runs) == 1, "one RUN builds the examples"
    command = runs[0].split("&&")[0].split()
    assert command[:3] == ["python", "-m", "api.cli"]
    parser = argparse.ArgumentParser()
    add_service_commands(parser.add_subparsers(dest="command", required=True))
    assert parser.parse_args(command[3:]).command == "examples"
    # built where the API looks for them: inside the image's data dir
    data_dir = re.search(r"SNNCONV_DATA_DIR=(\S+)", dockerfile).group(1)
    examples = Settings(data_dir=data_dir).examples_path.as_posix()
    assert f"chown -R snnconv {examples}" in runs[0]


def test_worker_runs_the_celery_app_on_the_configured_queue(compose):
    workers = _active_workers(compose)
    assert workers, "no active worker service"
    for name, service in workers.items():
        command = service["command"]
        assert command[:4] == ["celery", "-A", "worker.celery_app", "worker"], name
        assert command[command.index("-Q") + 1] == Settings().queue
    from worker import celery_app

    # What `celery -A worker.celery_app worker` does at start-up: import the included modules;
    # then the task the API sends must be registered under its name.
    celery_app.app.loader.import_default_modules()
    assert celery_app.TASK_NAME in celery_app.app.tasks
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
        assert {"redis", "postgres"} <= set(service["depends_on"]), name
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


def _require_docker_compose() -> None:
    if shutil.which("docker-compose"):
        return
    message = "Debian's docker-compose is not installed (apt-get install docker-compose)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message}; .ci/run installs it", pytrace=False)
    pytest.skip(message)


def test_compose_validates_with_docker_compose():
    _require_docker_compose()
    for files in VARIANTS.values():
        done = subprocess.run([*_compose_args(files), "config", "--quiet"], capture_output=True,
                              text=True, check=False, env=_compose_env(PASSWORD))
        assert done.returncode == 0, done.stderr


def test_compose_refuses_to_start_without_a_database_password(tmp_path):
    _require_docker_compose()
    empty = tmp_path / "empty.env"  # in place of ./.env, which may hold a developer's password
    empty.write_text("")
    for files in VARIANTS.values():
        done = subprocess.run([*_compose_args(files), "--env-file", str(empty), "config",
                               "--quiet"], capture_output=True, text=True, check=False,
                              env=_compose_env(None))
        assert done.returncode != 0 and "set POSTGRES_PASSWORD" in done.stderr, done.stderr


def test_every_use_of_the_password_is_mandatory_and_shared():
    for path in (BASE, CPU_OVERRIDE):
        uses = [m for m in VARIABLE.finditer(path.read_text())
                if m.group("name") == "POSTGRES_PASSWORD"]
        assert uses, path
        assert all(m.group("op") == ":?" for m in uses), f"{path}: a default password"
        with pytest.raises(ValueError, match="set POSTGRES_PASSWORD"):
            _merge_by_hand([path], {})
    for files in VARIANTS.values():
        services = _resolved(files)["services"]
        assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == PASSWORD
        for name, service in _snnconv_services({"services": services}).items():
            url = service["environment"]["DATABASE_URL"]
            assert url == f"postgresql://snnconv:{PASSWORD}@postgres:5432/snnconv", name


def test_settings_refuse_the_old_default_password(monkeypatch):
    """POSTGRES_PASSWORD=snnconv (the former Compose default) stops the containers' settings."""
    services = _snnconv_services(_resolved([BASE], password="snnconv"))
    for key in _settings_env_names():
        monkeypatch.delenv(key, raising=False)
    for key, value in services["api"]["environment"].items():
        monkeypatch.setenv(key, str(value))
    with pytest.raises(ValueError, match="password in DATABASE_URL is 'snnconv'"):
        Settings()
