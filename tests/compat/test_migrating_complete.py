"""Every flag, environment variable and metric of the Go runner either behaves the same in trunner
or is named in MIGRATING.md. The Go runner's list is test data (fixtures/go_runner_surface.json),
derived once from its source at the commit it names."""

from __future__ import annotations

import importlib
import json
import pkgutil
import re
from pathlib import Path
from typing import Any

import attrs
import pytest

import trunner
from trunner.cli.app import build_parser
from trunner.config import _META, SettingsSource, _fields
from trunner.observability.gometrics import exposition
from trunner.observability.metrics import RunnerMetrics

ROOT = Path(__file__).resolve().parents[2]
SURFACE = json.loads((Path(__file__).parent / "fixtures" / "go_runner_surface.json").read_text())
MIGRATING = (ROOT / "MIGRATING.md").read_text()


def mentioned(name: str) -> bool:
    return re.search(rf"`{re.escape(name)}(?:[ =`\[]|$)", MIGRATING) is not None


def setting_fields() -> dict[str, tuple[type[Any], str]]:
    """flag -> (settings class, field name), over every settings class in trunner."""
    found: dict[str, tuple[type[Any], str]] = {}
    for module in pkgutil.walk_packages(trunner.__path__, "trunner."):
        if module.name.endswith("__main__"):
            continue
        for value in vars(importlib.import_module(module.name)).values():
            if (
                isinstance(value, type)
                and attrs.has(value)
                and any(_META in f.metadata for f in attrs.fields(value))
            ):
                for field, spec, _ in _fields(value):
                    found.setdefault(spec.flag, (value, field.name))
    return found


FIELDS = setting_fields()


def accepted_options(command: str) -> dict[str, str]:
    """option -> its help text, for ``command``'s parser."""
    parser = build_parser()
    sub = next(a for a in parser._actions if hasattr(a, "choices") and a.choices).choices[command]
    return {o: a.help or "" for a in sub._actions for o in a.option_strings}


def same_default(go: str, help_text: str) -> bool:
    text = " ".join(help_text.split())
    if not text.endswith("]") or "; default " not in text:
        return False
    ours = text.rsplit("; default ", 1)[1][:-1].strip().strip('"')
    if ours == "(secret)":
        ours = ""
    go = go.strip('"')
    if go.startswith("[]string{"):
        go = ",".join(re.findall(r'"([^"]*)"', go))
    try:
        return float(go) == float(ours)
    except ValueError:
        return go.lower() == ours.lower()


def default_difference_listed(name: str) -> bool:
    """A MIGRATING.md line names ``name`` and says what its default is."""
    return any(f"`{name}" in line and "default" in line for line in MIGRATING.splitlines())


@pytest.mark.parametrize("flag", SURFACE["flags"], ids=lambda f: f"{f['command']}:{f['flag']}")
def test_each_go_flag_behaves_the_same_or_is_in_migrating(flag: dict[str, Any]) -> None:
    name = "--" + flag["flag"]
    command = "run" if flag["command"] in ("global", "run") else flag["command"]
    options = accepted_options(command)
    if name not in options:
        assert mentioned(name), f"{name} is neither accepted by `trunner {command}` nor in MIGRATING.md"
        return
    if flag["short"]:
        assert "-" + flag["short"] in options
    if not same_default(flag["default"], options[name]):
        assert default_difference_listed(name), (
            f"{name}: Go's default {flag['default']} differs ({options[name]!r}) and MIGRATING.md does not say so"
        )


def _example(cls: type[Any], field: str) -> tuple[str, Any]:
    for f, _, type_ in _fields(cls):
        if f.name == field:
            if type_ is bool:
                return "true", True
            if type_ is int:
                return "7", 7
            if type_ is float:
                return "7", 7.0
            if type_ == tuple[str, ...]:
                return "q", ("q",)
            return "example", "example"
    raise AssertionError(field)


def go_env() -> list[tuple[str, str | None]]:
    listed = [(e["env"], e["setting"]) for e in SURFACE["env"]]
    automatic = [
        ("OPSLEVEL_" + f["flag"].upper(), f["flag"]) for f in SURFACE["flags"] if f["command"] != "test"
    ]
    library = [(name, None) for name in SURFACE["library_env"]]
    return list(dict.fromkeys([*listed, *automatic, *library]))


@pytest.mark.parametrize(("env", "setting"), go_env(), ids=lambda v: str(v))
def test_each_go_environment_variable_behaves_the_same_or_is_in_migrating(
    env: str, setting: str | None
) -> None:
    if mentioned(env):
        return
    assert setting is not None, (
        f"{env} is read by the Go runner's libraries; MIGRATING.md must say what trunner does"
    )
    assert "--" + setting in FIELDS, (
        f"{env}: trunner has no setting --{setting} and MIGRATING.md does not name it"
    )
    cls, field = FIELDS["--" + setting]
    text, value = _example(cls, field)
    source = SettingsSource(environ={env: text})
    try:
        loaded = getattr(source.get(cls), field)
    except Exception as exc:  # a value another check of the class refuses still shows the variable is read
        assert text in str(exc) or env in str(exc), exc
        return
    assert loaded == value, f"{env}={text} does not set --{setting}"


@pytest.mark.parametrize("metric", SURFACE["metrics"], ids=lambda m: m["name"])
def test_each_go_metric_is_served_with_its_type_or_is_in_migrating(metric: dict[str, str]) -> None:
    if mentioned(metric["name"]):
        return
    text = exposition(RunnerMetrics(runner_id="r").registry).decode()
    assert f"# TYPE {metric['name']} {metric['type']}\n" in text


def test_the_data_names_its_source_and_commit() -> None:
    assert SURFACE["source"] == "github.com/OpsLevel/opslevel-runner"
    assert re.fullmatch(r"[0-9a-f]{40}", SURFACE["commit"])
    assert len(SURFACE["flags"]) >= 40 and len(SURFACE["metrics"]) == 6
