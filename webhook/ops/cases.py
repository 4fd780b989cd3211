"""Golden cases, run like `kyverno test`: a pod, optional configuration, the pod and warnings expected.

A case is a directory holding:

- ``pod.yaml``: the pod as it is created;
- ``config.yaml`` (optional): podmutate's configuration for the case;
- ``env`` (optional): ``NAME=value`` lines, the environment variables the plugins read
  (Airbyte's names). The environment of the process running the cases is not read: a case
  gives the same result on every machine;
- ``expected.yaml``: the pod podmutate must make of it. The init container's script is written
  ``<plugins/init.sh>``, so cases stay short;
- ``expected-warnings.txt`` (optional): the warnings, one per line; none when absent.

Cases run with ``mutated_by_annotation: false``: that annotation names podmutate's version and
the configuration's digest, which change with every release and every setting, while a case
holds what the plugins do.

`podmutate test DIR` runs the case in DIR, or every case in its sub-directories.
"""

from __future__ import annotations

import difflib
import pathlib
from dataclasses import dataclass, field

import yaml

from webhook import admission
from webhook.engine import Engine, load_engine
from webhook.errors import ConfigError

CASE_OVERRIDES = {"mutated_by_annotation": False}
POD_FILE = "pod.yaml"
CONFIG_FILE = "config.yaml"
ENV_FILE = "env"
EXPECTED_FILE = "expected.yaml"
WARNINGS_FILE = "expected-warnings.txt"
INIT_SCRIPT = "<plugins/init.sh>"


@dataclass
class CaseResult:
    """What one case gave: passed, or the differences (unified diffs) or the error that failed it."""

    name: str
    differences: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def passed(self) -> bool:
        return not self.differences and self.error is None


def find_cases(directory: str | pathlib.Path) -> list[pathlib.Path]:
    """`directory` when it is a case, else every case below it, sorted."""
    root = pathlib.Path(directory)
    if (root / POD_FILE).is_file():
        return [root]
    return sorted(path.parent for path in root.rglob(POD_FILE))


def read_env(path: pathlib.Path) -> dict[str, str]:
    """`NAME=value` lines; blank lines and `#` comments are skipped."""
    environ = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            environ[name.strip()] = value
    return environ


def readable(pod: dict) -> dict:
    """The pod with the init script's text replaced by INIT_SCRIPT."""
    for container in (pod.get("spec") or {}).get("initContainers") or []:
        if container.get("command", [])[:2] == ["sh", "-c"]:
            container["command"] = ["sh", "-c", INIT_SCRIPT]
    return pod


def case_settings(case: pathlib.Path) -> tuple[str | None, dict[str, str]]:
    """A case's configuration file (None when it has none) and its environment variables."""
    config_path = case / CONFIG_FILE
    environ = read_env(case / ENV_FILE) if (case / ENV_FILE).exists() else {}
    return (str(config_path) if config_path.exists() else None), environ


def case_engine(case: pathlib.Path) -> Engine:
    """The engine a case runs with: its configuration and environment alone (no mutated-by annotation)."""
    config_path, environ = case_settings(case)
    return load_engine(config_path, environ=environ, overrides=CASE_OVERRIDES)


def mutate_case(case: pathlib.Path) -> tuple[dict, list[str]]:
    """The readable mutated pod of a case and its warnings; raises ConfigError, Denied or PluginError."""
    engine = case_engine(case)
    pod = yaml.safe_load((case / POD_FILE).read_text())
    mutation = admission.mutate(pod, engine)
    return readable(mutation.pod), mutation.warnings


def run_case(case: pathlib.Path, *, update: bool = False) -> CaseResult:
    """Run one case; with `update`, write what it gave as what it expects instead of comparing."""
    outcome = CaseResult(case.name)
    try:
        got, warnings = mutate_case(case)
    except (ConfigError, admission.Denied, admission.PluginError, yaml.YAMLError, OSError) as error:
        outcome.error = f"{type(error).__name__}: {error}"
        return outcome
    got_text = yaml.safe_dump(got, sort_keys=False)
    warnings_text = "".join(f"{warning}\n" for warning in warnings)
    if update:
        (case / EXPECTED_FILE).write_text(got_text)
        (case / WARNINGS_FILE).write_text(warnings_text)
        return outcome
    try:
        expected = yaml.safe_load((case / EXPECTED_FILE).read_text())
    except (OSError, yaml.YAMLError) as error:
        outcome.error = f"{EXPECTED_FILE}: {error}"
        return outcome
    if got != expected:
        outcome.differences.append(unified(yaml.safe_dump(expected, sort_keys=False), got_text, EXPECTED_FILE))
    expected_warnings = (case / WARNINGS_FILE).read_text() if (case / WARNINGS_FILE).exists() else ""
    if warnings_text != expected_warnings:
        outcome.differences.append(unified(expected_warnings, warnings_text, WARNINGS_FILE))
    return outcome


def unified(expected: str, got: str, name: str) -> str:
    """A unified diff from what was expected to what podmutate gave."""
    return "".join(
        difflib.unified_diff(
            expected.splitlines(keepends=True),
            got.splitlines(keepends=True),
            fromfile=f"{name} (expected)",
            tofile=f"{name} (podmutate)",
        )
    )
