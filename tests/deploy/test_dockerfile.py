"""deploy/docker/Dockerfile and .dockerignore, read as Docker reads them (no engine needed)."""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.deploy.conftest import DEPLOY, ROOT, known_settings, run_python_healthcheck

DOCKERFILE = DEPLOY / "docker" / "Dockerfile"


@dataclass
class Instruction:
    keyword: str
    args: str


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction]

    def all(self, keyword: str) -> list[str]:
        return [i.args for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> str:
        found = self.all(keyword)
        assert found, f"stage {self.name or self.base} has no {keyword}"
        return found[-1]

    def env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for args in self.all("ENV"):
            for key, value in re.findall(r'(\w+)=("[^"]*"|\S+)', args):
                env[key] = value.strip('"')
        return env


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Instructions with continuation lines joined and comments dropped; global ARG defaults."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        rest = rest.strip()
        if keyword == "FROM":
            m = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", rest, re.IGNORECASE)
            assert m, f"bad FROM: {rest}"
            base = re.sub(r"\$\{(\w+)\}", lambda v: args[v.group(1)], m.group(1))
            stages.append(Stage(base=base, name=m.group(2), instructions=[]))
        elif not stages:
            assert keyword == "ARG", f"{keyword} before the first FROM"
            name, _, default = rest.partition("=")
            args[name] = default
        else:
            stages[-1].instructions.append(Instruction(keyword, rest))
    return args, stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse(DOCKERFILE.read_text())[1]


def test_multi_stage_on_python_311_slim(stages: list[Stage]) -> None:
    assert len(stages) >= 2
    assert all(s.base == "python:3.11-slim" for s in stages)
    names = [s.name for s in stages]
    final = stages[-1]
    # The final stage takes the built virtualenv from an earlier stage, not the sources.
    copies_from = [a for a in final.all("COPY") if a.startswith("--from=")]
    assert copies_from, "the runtime stage copies nothing from the build stage"
    for args in copies_from:
        assert args.split()[0].removeprefix("--from=") in names[:-1]
    assert not any(a.split()[0] in ("shared/", "services/") for a in final.all("COPY"))


def test_build_stage_builds_a_wheel_of_the_project(stages: list[Stage]) -> None:
    build = stages[0]
    runs = " ".join(build.all("RUN"))
    assert "pip wheel" in runs
    assert "pip install" in runs
    copied = {a.split()[0].rstrip("/") for a in build.all("COPY")}
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    # Everything setuptools reads to build the wheel is in the build stage.
    assert {"pyproject.toml", pyproject["project"]["readme"]} <= copied
    for pattern in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]:
        assert pattern.rstrip("*") in copied, f"package {pattern} is not copied"


def test_runtime_runs_ciclo_as_a_non_root_user(stages: list[Stage]) -> None:
    final = stages[-1]
    user = final.last("USER")
    uid = user.split(":")[0]
    assert uid.isdigit(), "a numeric USER lets Kubernetes verify runAsNonRoot"
    assert int(uid) != 0
    assert json.loads(final.last("ENTRYPOINT")) == ["ciclo"]
    assert json.loads(final.last("CMD")) == ["run"]
    assert "8000" in final.last("EXPOSE").split()


def test_runtime_environment(stages: list[Stage]) -> None:
    final = stages[-1]
    env = final.env()
    assert env["CICLO_HOST"] == "0.0.0.0"
    assert env["CICLO_PORT"] == "8000"
    assert env["CICLO_JOURNEYS_DIR"] == "/app/journeys"
    assert env["CICLO_TEMPLATES_DIR"] == "/app/templates"
    assert env["PATH"].startswith("/opt/ciclo/bin:")
    unknown = {k for k in env if k.startswith("CICLO_")} - known_settings()
    assert not unknown, f"the image sets variables Ciclo does not read: {unknown}"
    copies = {tuple(a.split()[-2:]) for a in final.all("COPY")}
    assert ("journeys/", "/app/journeys/") in copies
    assert ("templates/", "/app/templates/") in copies


def test_healthcheck_probes_livez_with_python(
    stages: list[Stage], probe_target: tuple[int, type]
) -> None:
    hc = stages[-1].last("HEALTHCHECK")
    options, _, command = hc.partition("CMD ")
    assert "--interval=" in options
    argv = json.loads(command)
    assert argv[:2] == ["python", "-c"]
    assert "/livez" in argv[2]
    port, handler = probe_target
    env = {"CICLO_PORT": str(port)}
    assert run_python_healthcheck(argv[2], env) == 0
    handler.status = 503
    assert run_python_healthcheck(argv[2], env) != 0


# --- .dockerignore -------------------------------------------------------------------------------


def _dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        include = line.startswith("!")
        pattern = line.removeprefix("!").strip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**", i):
                regex += ".*"
                i += 2
                if pattern.startswith("/", i):
                    regex += "/?"
                    i += 1
            elif pattern[i] == "*":
                regex += "[^/]*"
                i += 1
            elif pattern[i] == "?":
                regex += "[^/]"
                i += 1
            elif pattern[i] == "[":
                end = pattern.index("]", i)
                regex += pattern[i : end + 1]
                i = end + 1
            else:
                regex += re.escape(pattern[i])
                i += 1
        # A pattern that matches a folder matches everything under it.
        rules.append((include, re.compile(f"{regex}(/.*)?")))
    return rules


def _in_context(path: str) -> bool:
    """Docker's rule: the last matching line wins."""
    sent = True
    for include, regex in _dockerignore_rules():
        if regex.fullmatch(path):
            sent = include
    return sent


@pytest.mark.parametrize(
    "path",
    [
        "pyproject.toml",
        "README.md",
        "shared/settings.py",
        "services/cli.py",
        "services/journey/migrations/env.py",
        "journeys/welcome.json",
        "templates/welcome-1/html.liquid",
    ],
)
def test_dockerignore_sends_what_the_build_needs(path: str) -> None:
    assert (ROOT / path).exists(), path
    assert _in_context(path)


@pytest.mark.parametrize(
    "path",
    [
        ".git/HEAD",
        ".venv/bin/python",
        ".ciclo/ciclo.db",
        "tests/conftest.py",
        "bench/results.md",
        "shared/__pycache__/settings.cpython-311.pyc",
        "services/journey/__pycache__/x.pyc",
        "deploy/compose.yaml",
    ],
)
def test_dockerignore_keeps_the_rest_out(path: str) -> None:
    assert not _in_context(path)


def test_every_copy_source_is_in_the_context(stages: list[Stage]) -> None:
    for stage in stages:
        for args in stage.all("COPY"):
            parts = args.split()
            if parts[0].startswith("--from="):
                continue
            for source in [p for p in parts[:-1] if not p.startswith("--")]:
                path = Path(source.rstrip("/"))
                assert (ROOT / path).exists(), f"COPY {source}: missing in the repository"
                probe = path / "x" if (ROOT / path).is_dir() else path
                assert _in_context(probe.as_posix()), f"COPY {source}: excluded by .dockerignore"
