"""Golden files: tests/golden/<case>/pod.yaml, mutated with the case's config.yaml or env, must
equal expected.yaml (and its warnings, expected-warnings.txt).

Regenerate after a deliberate change with PODMUTATE_REGENERATE_GOLDEN=1, then read the diff.
"""

import os
import pathlib

import pytest
import yaml

from webhook import admission
from webhook.config import load_config

GOLDEN = pathlib.Path(__file__).parent / "golden"
CASES = sorted(path.name for path in GOLDEN.iterdir() if (path / "pod.yaml").exists())
INIT_SCRIPT = "<plugins/init.sh>"


def case_settings(case):
    """A case's configuration file (or None) and environment variables (its `env` file)."""
    environ = {}
    if (case / "env").exists():
        for line in (case / "env").read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                name, _, value = line.partition("=")
                environ[name] = value
    config_file = case / "config.yaml"
    return (str(config_file) if config_file.exists() else None), environ


def case_config(case):
    config_path, environ = case_settings(case)
    return load_config(config_path, environ=environ)


def readable(pod):
    """The pod with the init script's text replaced by its file name, so goldens stay short."""
    for container in pod.get("spec", {}).get("initContainers") or []:
        if container.get("command", [])[:2] == ["sh", "-c"]:
            container["command"] = ["sh", "-c", INIT_SCRIPT]
    return pod


@pytest.mark.parametrize("name", CASES)
def test_golden(name):
    case = GOLDEN / name
    pod = yaml.safe_load((case / "pod.yaml").read_text())
    mutation = admission.mutate(pod, case_config(case))
    got = readable(mutation.pod)
    warnings = "".join(f"{warning}\n" for warning in mutation.warnings)
    if os.environ.get("PODMUTATE_REGENERATE_GOLDEN"):
        (case / "expected.yaml").write_text(yaml.safe_dump(got, sort_keys=False))
        (case / "expected-warnings.txt").write_text(warnings)
    assert got == yaml.safe_load((case / "expected.yaml").read_text())
    assert warnings == (case / "expected-warnings.txt").read_text()


def test_every_job_type_has_a_golden_case():
    job_types = set()
    config = load_config(environ={})
    for name in CASES:
        pod = yaml.safe_load((GOLDEN / name / "pod.yaml").read_text())
        job_types.add(admission.mutate(pod, config).job_type)
    assert {"spec", "check", "discover", "sync", "orchestrator"} <= job_types
