"""deploy/compose.yaml as Debian's `docker-compose config` resolves it (no Docker engine needed)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import (
    DEPLOY,
    ROOT,
    check_settings_accept,
    known_settings,
    run_python_healthcheck,
)
from tests.fixtures import unavailable

COMPOSE = DEPLOY / "compose.yaml"
ENV_EXAMPLE = DEPLOY / ".env.example"
CICLO_SERVICES = ("ingest", "journey", "dispatch")

# docs: REFERENCE.md, "Deployment conventions".
KRAFT_ENV = {
    "KAFKA_NODE_ID": "1",
    "KAFKA_PROCESS_ROLES": "broker,controller",
    "KAFKA_LISTENERS": "CONTROLLER://:29093,PLAINTEXT_HOST://:9092,PLAINTEXT://:19092",
    "KAFKA_ADVERTISED_LISTENERS": "PLAINTEXT_HOST://localhost:9092,PLAINTEXT://broker:19092",
    "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": (
        "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,PLAINTEXT_HOST:PLAINTEXT"
    ),
    "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@broker:29093",
    "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
    "KAFKA_INTER_BROKER_LISTENER_NAME": "PLAINTEXT",
    "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
    "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
    "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
    "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
}


def compose_config(tmp_path: Path, env_file: Path | None = None, **env: str) -> dict[str, Any]:
    binary = shutil.which("docker-compose")
    if binary is None:
        unavailable("docker-compose (Debian package docker-compose)")
        raise AssertionError("unreachable")
    # An empty env file by default, so a developer's deploy/.env cannot change what is tested.
    if env_file is None:
        env_file = tmp_path / "empty.env"
        env_file.write_text("")
    args = [binary, "--project-directory", str(DEPLOY), "-f", str(COMPOSE)]
    args += ["--env-file", str(env_file), "config"]
    clean = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), **env}
    done = subprocess.run(args, env=clean, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, f"docker-compose config failed:\n{done.stderr}"
    config: dict[str, Any] = yaml.safe_load(done.stdout)
    return config


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return compose_config(tmp_path_factory.mktemp("compose"))


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def test_the_stack(config: dict[str, Any]) -> None:
    assert set(config["services"]) == {"broker", "db", "migrate", *CICLO_SERVICES}
    assert config["services"]["broker"]["image"].startswith("apache/kafka:")
    assert config["services"]["db"]["image"] == "postgres:16"
    assert set(config["volumes"]) == {"kafka-data", "pg-data"}


def test_kafka_runs_kraft_single_node_as_documented(config: dict[str, Any]) -> None:
    broker = config["services"]["broker"]
    env = env_of(broker)
    assert {k: env.get(k) for k in KRAFT_ENV} == KRAFT_ENV
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", env["CLUSTER_ID"]), "a base64url UUID"
    # The data lives in the named volume.
    assert env["KAFKA_LOG_DIRS"] == "/var/lib/kafka/data"
    assert any(v.startswith("kafka-data:/var/lib/kafka/data") for v in broker["volumes"])
    assert "kafka-broker-api-versions.sh" in " ".join(broker["healthcheck"]["test"])


def test_postgres_is_healthchecked(config: dict[str, Any]) -> None:
    db = config["services"]["db"]
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])
    assert any(v.startswith("pg-data:/var/lib/postgresql/data") for v in db["volumes"])


def test_migrate_is_a_one_shot_job_before_the_services(config: dict[str, Any]) -> None:
    migrate = config["services"]["migrate"]
    assert migrate["entrypoint"] == ["sh", "-c"]
    assert migrate["command"] == ["ciclo migrate && ciclo topics create"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"] == {
        "db": {"condition": "service_healthy"},
        "broker": {"condition": "service_healthy"},
    }
    for name in CICLO_SERVICES:
        depends = config["services"][name]["depends_on"]
        assert depends["migrate"] == {"condition": "service_completed_successfully"}
        assert depends["db"] == {"condition": "service_healthy"}
        assert depends["broker"] == {"condition": "service_healthy"}


@pytest.mark.parametrize("name", CICLO_SERVICES)
def test_each_service_runs_alone_in_distributed_mode(config: dict[str, Any], name: str) -> None:
    service = config["services"][name]
    assert service["command"] == ["serve", name]
    assert service["build"]["dockerfile"] == "deploy/docker/Dockerfile"
    assert Path(service["build"]["context"]).resolve() == ROOT
    env = env_of(service)
    assert env["CICLO_BUS_URL"] == "kafka://broker:19092"
    assert re.fullmatch(
        r"postgresql\+asyncpg://ciclo:[^@]+@db:5432/ciclo", env["CICLO_DATABASE_URL"]
    )
    assert env["CICLO_AUTO_MIGRATE"] == "false"
    assert env["CICLO_DEMO"] == "false"
    # Same image and settings as the migration job, so it migrates what the services expect.
    assert service["image"] == config["services"]["migrate"]["image"]
    assert env == env_of(config["services"]["migrate"])


def test_ports_journey_replicas_and_partitions(config: dict[str, Any]) -> None:
    services = config["services"]
    published = {name: s.get("ports", []) for name, s in services.items()}
    assert "127.0.0.1:8000:8000/tcp" in published["ingest"]
    assert "127.0.0.1:8001:8000/tcp" in published["dispatch"]
    # Two journey replicas can't share a host port.
    assert published["journey"] == []
    replicas = services["journey"]["deploy"]["replicas"]
    assert replicas == 2
    assert replicas <= int(env_of(services["journey"])["CICLO_BUS_PARTITIONS"])


@pytest.mark.parametrize("name", CICLO_SERVICES)
def test_healthcheck_probes_readyz(
    config: dict[str, Any], name: str, probe_target: tuple[int, type]
) -> None:
    test = config["services"][name]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]
    code = test[3]
    assert "http://127.0.0.1:8000/readyz" in code
    port, handler = probe_target
    code = code.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
    assert run_python_healthcheck(code, {}) == 0
    handler.status = 503
    assert run_python_healthcheck(code, {}) != 0


def test_ciclo_accepts_the_environment(
    config: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = env_of(config["services"]["dispatch"])
    unknown = {k for k in env if k.startswith("CICLO_")} - known_settings()
    assert not unknown, f"compose sets variables Ciclo does not read: {unknown}"
    check_settings_accept(env, monkeypatch)


def test_env_example_documents_the_defaults(tmp_path: Path, config: dict[str, Any]) -> None:
    """Copying .env.example to .env changes nothing: it shows every default truthfully."""
    assert compose_config(tmp_path, env_file=ENV_EXAMPLE) == config
    names = {
        line.split("=", 1)[0]
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line and not line.startswith("#")
    }
    used = set(re.findall(r"\$\{(\w+)", COMPOSE.read_text()))
    assert used <= names, f"variables compose reads but .env.example omits: {used - names}"
    assert names - {"COMPOSE_PROJECT_NAME"} <= used


def test_sendgrid_in_production_is_one_env_file_away(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_file = tmp_path / "prod.env"
    env_file.write_text(
        "CICLO_ENV=production\nCICLO_EMAIL_PROVIDER=sendgrid\nCICLO_SENDGRID_API_KEY=SG.test\n"
        "CICLO_UNSUBSCRIBE_SECRET=0123456789abcdef\nCICLO_PUBLIC_URL=https://ciclo.shop.example\n"
        "POSTGRES_PASSWORD=s3cret-pass\nBIND_ADDRESS=0.0.0.0\n"
    )
    config = compose_config(tmp_path, env_file=env_file)
    env = env_of(config["services"]["dispatch"])
    assert env["CICLO_DATABASE_URL"] == "postgresql+asyncpg://ciclo:s3cret-pass@db:5432/ciclo"
    assert env_of(config["services"]["db"])["POSTGRES_PASSWORD"] == "s3cret-pass"
    assert "0.0.0.0:8000:8000/tcp" in config["services"]["ingest"]["ports"]
    check_settings_accept(env, monkeypatch)


def test_production_with_the_sink_is_refused_by_ciclo(
    config: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check above can fail: Ciclo refuses the sink in production."""
    env = {**env_of(config["services"]["dispatch"]), "CICLO_ENV": "production"}
    from shared.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="sink"):
        check_settings_accept(env, monkeypatch)
