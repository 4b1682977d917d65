"""What can be checked about the container image without a Docker engine: the Dockerfile is parsed and its
instructions are checked against the project (console script, copied files, .dockerignore, metrics port)."""

from __future__ import annotations

import fnmatch
import importlib
import json
import re
import shlex
import tomllib
from pathlib import Path

import attrs
import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

COMPILERS = ("gcc", "g++", "cc ", "clang", "make", "build-essential", "python3-dev", "libc6-dev")


@attrs.frozen
class Instruction:
    keyword: str
    arguments: str
    line: int


@attrs.define
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = attrs.Factory(list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction:
        found = self.all(keyword)
        assert found, f"stage {self.name or self.base} has no {keyword}"
        return found[-1]


def parse_instructions(text: str) -> list[Instruction]:
    """Join continuation lines, drop comments and blank lines (Dockerfile syntax, default escape char)."""
    instructions: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1])
            continue
        pending.append(stripped)
        keyword, _, arguments = " ".join(pending).partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip(), start))
        pending = []
    assert not pending, "Dockerfile ends inside a continued line"
    return instructions


def parse_stages(text: str) -> tuple[dict[str, str], list[Stage]]:
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for instruction in parse_instructions(text):
        if instruction.keyword == "FROM":
            words = instruction.arguments.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
        elif not stages:
            assert instruction.keyword == "ARG", f"line {instruction.line}: only ARG may come before FROM"
            key, _, value = instruction.arguments.partition("=")
            global_args[key] = value
        else:
            stages[-1].instructions.append(instruction)
    return global_args, stages


def exec_form(instruction: Instruction) -> list[str]:
    value = json.loads(instruction.arguments)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), (
        f"line {instruction.line}: {instruction.keyword} must use the JSON exec form"
    )
    return value


def copy_sources(instruction: Instruction) -> tuple[dict[str, str], list[str], str]:
    words = shlex.split(instruction.arguments)
    options = {}
    while words and words[0].startswith("--"):
        key, _, value = words.pop(0)[2:].partition("=")
        options[key] = value
    return options, words[:-1], words[-1]


def dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern that matches a path (or one of its parents) decides."""
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern[1:] if negate else pattern
        body = body.strip("/")
        regex = fnmatch.translate(body).replace(".*", "[^/]*")
        if body.startswith("**/"):
            regex = "(.*/)?" + fnmatch.translate(body[3:]).replace(".*", "[^/]*")
        if any(re.fullmatch(regex, candidate) for candidate in candidates):
            excluded = not negate
    return excluded


@pytest.fixture(scope="module")
def parsed() -> tuple[dict[str, str], list[Stage]]:
    return parse_stages(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def runtime(parsed: tuple[dict[str, str], list[Stage]]) -> Stage:
    return parsed[1][-1]


@pytest.fixture(scope="module")
def pyproject() -> dict[str, object]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def ignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


BASE_REFERENCE = "${PYTHON_IMAGE}${PYTHON_DIGEST:+@}${PYTHON_DIGEST}"


def test_multi_stage_on_an_official_slim_python_image_pinned_by_tag(
    parsed: tuple[dict[str, str], list[Stage]],
) -> None:
    global_args, stages = parsed
    assert len(stages) >= 2
    assert re.fullmatch(r"python:3\.1[1-3]\.\d+-slim-(bookworm|trixie)", global_args["PYTHON_IMAGE"]), (
        "the base is pinned to a patch release and a Debian release"
    )
    assert global_args["PYTHON_DIGEST"] == "", "the digest is an optional build argument"
    for stage in stages:
        assert stage.base == BASE_REFERENCE, "every stage builds on the same pinned base"
    assert stages[0].name, "the build stage needs a name for COPY --from"


def test_no_frontend_image_is_needed() -> None:
    """A ``# syntax=`` directive makes BuildKit pull a frontend image; nothing here needs one."""
    assert not re.search(r"^#\s*syntax\s*=", DOCKERFILE.read_text(), re.MULTILINE | re.IGNORECASE)


def test_entrypoint_is_tini_then_the_trunner_console_script(
    runtime: Stage, pyproject: dict[str, object]
) -> None:
    entrypoint = exec_form(runtime.last("ENTRYPOINT"))
    assert entrypoint[:2] == ["/usr/bin/tini", "--"], "tini must be PID 1 so that SIGTERM reaches trunner"
    script = entrypoint[2]
    scripts = pyproject["project"]["scripts"]  # type: ignore[index]
    assert script in scripts, f"{script!r} is not a console script of pyproject.toml"
    module_name, _, function = scripts[script].partition(":")
    assert callable(getattr(importlib.import_module(module_name), function))
    cmd = exec_form(runtime.last("CMD"))
    assert cmd == ["run"]
    cli = importlib.import_module("trunner.cli.app")
    assert cmd[0] in cli.COMMANDS


def test_tini_comes_from_debian_apt_in_the_runtime_stage(runtime: Stage) -> None:
    installs = [r.arguments for r in runtime.all("RUN") if "apt-get install" in r.arguments]
    assert installs and any(re.search(r"\btini\b", run) for run in installs)
    assert all("--no-install-recommends" in run for run in installs)
    assert any("rm -rf /var/lib/apt/lists/*" in r.arguments for r in runtime.all("RUN"))


def test_every_copied_file_exists_and_is_in_the_build_context(
    parsed: tuple[dict[str, str], list[Stage]],
) -> None:
    _, stages = parsed
    patterns = ignore_patterns()
    names = set()
    checked = 0
    for stage in stages:
        for instruction in stage.all("COPY") + stage.all("ADD"):
            assert instruction.keyword == "COPY", f"line {instruction.line}: use COPY, not ADD"
            options, sources, _ = copy_sources(instruction)
            if "from" in options:
                assert options["from"] in names, f"line {instruction.line}: unknown stage {options['from']}"
                continue
            for source in sources:
                assert (ROOT / source).exists(), f"line {instruction.line}: {source} does not exist"
                assert not dockerignore_excludes(source, patterns), f"{source} is excluded by .dockerignore"
                checked += 1
        if stage.name:
            names.add(stage.name)
    assert checked >= 2


def test_dockerignore_keeps_tests_and_local_state_out_of_the_context() -> None:
    patterns = ignore_patterns()
    for path in ("tests/test_helm.py", ".venv/bin/python", ".git/HEAD", "helm/trunner/Chart.yaml", "bench"):
        assert dockerignore_excludes(path, patterns), path
    for path in ("trunner/cli/app.py", "pyproject.toml", "README.md"):
        assert not dockerignore_excludes(path, patterns), path
    assert dockerignore_excludes("trunner/__pycache__/cli.cpython-311.pyc", patterns)


def test_build_stage_installs_the_locked_dependencies_then_the_project_without_resolving(
    parsed: tuple[dict[str, str], list[Stage]], pyproject: dict[str, object]
) -> None:
    build = parsed[1][0]
    installs = [r.arguments for r in build.all("RUN") if "pip install" in r.arguments]
    assert len(installs) == 2
    locked, project = installs
    assert "--require-hashes" in locked and "-r requirements.lock" in locked and "--no-deps" in locked
    assert re.search(r"pip install (--[\w-]+ )*\.(\s|$)", project), project
    assert "--no-deps" in project, "the project install must not resolve anything beyond the lock"
    assert " -e " not in project and "--editable" not in project and "[dev]" not in project
    readme = pyproject["project"]["readme"]  # type: ignore[index]
    copied = [s for c in build.all("COPY") for s in copy_sources(c)[1]]
    assert {"requirements.lock", "pyproject.toml", readme, "trunner"} <= set(copied)


def test_runtime_stage_copies_only_the_venv_and_builds_nothing(runtime: Stage) -> None:
    copies = runtime.all("COPY")
    assert len(copies) == 1
    options, sources, destination = copy_sources(copies[0])
    assert options.get("from") and sources == ["/opt/trunner"] and destination == "/opt/trunner"
    env = " ".join(e.arguments for e in runtime.all("ENV"))
    assert "PATH=/opt/trunner/bin:$PATH" in env
    for run in runtime.all("RUN"):
        assert "pip install" not in run.arguments, f"line {run.line}: no pip install in the runtime stage"
        for compiler in COMPILERS:
            assert compiler not in run.arguments + " ", (
                f"line {run.line}: {compiler.strip()} in the runtime stage"
            )
    assert not any("tests" in c.arguments for c in runtime.all("COPY"))


def test_user_is_a_numeric_non_root_uid(runtime: Stage) -> None:
    user = runtime.last("USER").arguments
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0, user
    assert not gid or (gid.isdigit() and int(gid) != 0), user
    # The USER must come after every RUN so nothing runs as root after it is set.
    last_run = max(r.line for r in runtime.all("RUN"))
    assert runtime.last("USER").line > last_run


def test_oci_labels(runtime: Stage, pyproject: dict[str, object]) -> None:
    labels = " ".join(label.arguments for label in runtime.all("LABEL"))
    for key in ("title", "description", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels
    arguments = {a.arguments.partition("=")[0] for a in runtime.all("ARG")}
    for key, argument in (
        ("version", "VERSION"),
        ("revision", "REVISION"),
        ("source", "SOURCE"),
        ("created", "CREATED"),
        ("base.name", "PYTHON_IMAGE"),
        ("base.digest", "PYTHON_DIGEST"),
    ):
        assert f'org.opencontainers.image.{key}="${{{argument}}}"' in labels, key
        assert argument in arguments, f"the runtime stage must declare ARG {argument} to use it"
    license_text = pyproject["project"]["license"]["text"]  # type: ignore[index]
    assert f'org.opencontainers.image.licenses="{license_text}"' in labels


def test_exposes_the_metrics_port_the_chart_uses(runtime: Stage) -> None:
    import yaml

    values = yaml.safe_load((ROOT / "helm" / "trunner" / "values.yaml").read_text())
    exposed = {int(word.split("/")[0]) for e in runtime.all("EXPOSE") for word in e.arguments.split()}
    assert exposed == {values["runner"]["metricsPort"]} == {10354}
    assert runtime.last("STOPSIGNAL").arguments == "SIGTERM"
