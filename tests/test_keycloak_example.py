"""The Keycloak example plugin (examples/podmutate-keycloak), installed as a package and found through
its entry point, checked offline by its own golden cases with `podmutate test`, as its CI would.
On the real node: tests/node/test_keycloak.py."""

import json
import os
import subprocess

import pytest
import yaml

from tests.helpers import HERE, example_plugin_path, job_pod
from tools.harness.processes import PODMUTATE
from webhook.contract import MUTATED_BY_ANNOTATION

pytestmark = pytest.mark.served  # real servers, processes or sockets on this machine

EXAMPLE = os.path.join(HERE, "..", "examples", "podmutate-keycloak")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    return example_plugin_path(tmp_path_factory, EXAMPLE)


def podmutate(*args, pythonpath, input=None):
    env = {**os.environ, "PYTHONPATH": pythonpath}
    env.pop("PODMUTATE_CONFIG", None)
    return subprocess.run([*PODMUTATE, *args], capture_output=True, text=True, env=env, input=input)


def test_the_golden_cases_pass(installed):
    result = podmutate("test", os.path.join(EXAMPLE, "tests"), pythonpath=installed)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == "4 passed, 0 failed"


def test_it_is_registered_through_its_entry_point(installed):
    rows = {row["name"]: row for row in json.loads(podmutate("plugins", "--json", pythonpath=installed).stdout)}
    assert rows["keycloak"]["builtin"] is False and rows["keycloak"]["version"] == "0.1.0"
    assert rows["keycloak"]["hooks"] == [
        "classify_pod",
        "config_defaults",
        "config_from_environ",
        "mutate_pod",
        "parse_config",
    ]


def test_a_second_pass_changes_nothing_and_job_pods_are_untouched_by_it(installed):
    pod_file = os.path.join(EXAMPLE, "tests", "clustered", "pod.yaml")
    once = podmutate("mutate", "-f", pod_file, "-o", "json", pythonpath=installed)
    again = podmutate("mutate", "-f", "-", "--patch", "-o", "json", pythonpath=installed, input=once.stdout)
    assert json.loads(again.stdout) == []
    without = podmutate("mutate", "-f", "-", "-o", "json", pythonpath=installed, input=json.dumps(job_pod("sync")))
    plain = subprocess.run(
        [*PODMUTATE, "mutate", "-f", "-", "-o", "json"],
        capture_output=True,
        text=True,
        input=json.dumps(job_pod("sync")),
    )
    with_keycloak, plain_pod = json.loads(without.stdout), json.loads(plain.stdout)
    named = [
        json.loads(pod["metadata"]["annotations"].pop(MUTATED_BY_ANNOTATION)) for pod in (with_keycloak, plain_pod)
    ]
    assert with_keycloak == plain_pod  # the job pod is untouched by the keycloak plugin...
    assert "keycloak" in named[0]["plugins"] and "keycloak" not in named[1]["plugins"]  # ...which is still named


def mutate_with_probes(installed, tmp_path, probes):
    """`podmutate mutate` of the example's pod with keycloak.probes set to `probes`."""
    config = tmp_path / "podmutate.yaml"
    config.write_text(yaml.safe_dump({"keycloak": {"probes": probes}}))
    pod = os.path.join(EXAMPLE, "tests", "clustered", "pod.yaml")
    return podmutate("mutate", "-f", pod, "--config", str(config), pythonpath=installed)


def test_a_bad_setting_is_one_line_naming_it(installed, tmp_path):
    result = mutate_with_probes(installed, tmp_path, {"readiness": {"periodSeconds": 0}})
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "Error: invalid configuration: keycloak.probes.readiness.periodSeconds: 0 is not "
        "valid: expected a whole number of seconds (or times)"
    )


def test_a_liveness_success_threshold_the_api_server_refuses_is_refused_here(installed, tmp_path):
    result = mutate_with_probes(installed, tmp_path, {"liveness": {"successThreshold": 2}})
    assert result.returncode == 1
    assert "keycloak.probes.liveness.successThreshold: 2 is not valid: expected 1" in result.stderr
