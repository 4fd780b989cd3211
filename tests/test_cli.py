"""The `podmutate` command, as a user runs it, in process (click's CliRunner): its exit code,
standard output and standard error."""

import json
import logging
import shutil
from dataclasses import dataclass

import yaml
from click.testing import CliRunner

from tests.helpers import job_pod
from tools.harness.pods import review
from webhook.cli import main


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


def podmutate(*args, input=None, env=None):
    """Run `podmutate ARGS` in process; `env` is added to the environment (PODMUTATE_CONFIG unset)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level  # the CLI sets up logging on the captured stderr
    try:
        result = CliRunner().invoke(main, list(args), input=input, env={"PODMUTATE_CONFIG": None, **(env or {})})
    finally:
        root.handlers[:], root.level = handlers, level
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Ran(result.exit_code, result.stdout, result.stderr)


def test_mutate_a_multi_document_stream_passes_non_pods_through():
    stream = yaml.safe_dump_all(
        [job_pod("sync"), {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "b"}}]
    )
    result = podmutate("mutate", "-f", "-", input=stream)
    assert result.returncode == 0, result.stderr
    pod, config_map = yaml.safe_load_all(result.stdout)
    assert pod["spec"]["initContainers"][0]["name"] == "init"
    assert config_map == {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "b"}}
    assert "has no connection id" in result.stderr


def test_mutate_a_list_and_an_admission_review_as_json():
    listed = {"apiVersion": "v1", "kind": "List", "items": [job_pod("check"), job_pod(None)]}
    result = podmutate("mutate", "-f", "-", "-o", "json", input=json.dumps(listed))
    items = json.loads(result.stdout)["items"]
    assert items[0]["metadata"]["annotations"]["podmutate.io/status-check-interval"] == "1"
    assert items[1] == job_pod(None)
    result = podmutate("mutate", "-f", "-", "-o", "json", input=json.dumps(review(job_pod("spec"))))
    assert json.loads(result.stdout)["spec"]["initContainers"][0]["name"] == "init"


def test_patch_output_is_the_rfc6902_patch():
    result = podmutate("mutate", "-f", "-", "--patch", "-o", "json", input=json.dumps(job_pod("discover")))
    patch = json.loads(result.stdout)
    annotations = next(operation for operation in patch if operation["path"] == "/metadata/annotations")
    assert annotations["op"] == "add"
    assert annotations["value"]["podmutate.io/status-check-interval"] == "1"
    assert json.loads(annotations["value"]["podmutate.io/mutated-by"])["plugins"]["init_container"]


def test_bad_yaml_is_one_line_naming_the_document_and_line():
    stream = yaml.safe_dump(job_pod("sync")) + "---\nkind: [Pod\n"
    result = podmutate("mutate", "-f", "-", input=stream)
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0
    assert "<stdin>: document 2: line" in result.stderr


def test_bad_configuration_is_one_line(tmp_path):
    path = tmp_path / "podmutate.yaml"
    path.write_text("job_types:\n  check:\n    resources: {limits: {cpu: lots}}\n")
    result = podmutate("mutate", "-f", "-", "--config", str(path), input=json.dumps(job_pod("check")))
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "Error: invalid configuration: job_types.check.resources.limits.cpu: "
        "'lots' is not valid: expected a Kubernetes quantity such as 500m, 2 or 1Gi"
    )


def test_serve_refuses_to_start_on_a_bad_configuration(tmp_path):
    path = tmp_path / "podmutate.yaml"
    path.write_text("failure_mode: sometimes\n")
    result = podmutate("serve", "--config", str(path), "--cert-dir", str(tmp_path / "certs"))
    assert result.returncode == 1
    assert "failure_mode: 'sometimes'" in result.stderr


def test_podmutate_test_passes_the_golden_cases_and_fails_a_changed_one_with_a_diff(tmp_path):
    passed = podmutate("test", "tests/golden")
    assert passed.returncode == 0, passed.stdout
    assert passed.stdout.splitlines()[-1].endswith(" passed, 0 failed")
    case = tmp_path / "sync"
    shutil.copytree("examples/tests/sync-on-the-jobs-pool", case)
    expected = case / "expected.yaml"
    expected.write_text(expected.read_text().replace("memory: 4Gi", "memory: 8Gi"))
    (case / "expected-warnings.txt").write_text("podmutate: a warning that never comes\n")
    failed = podmutate("test", str(tmp_path))
    assert failed.returncode == 1
    assert "FAIL  sync" in failed.stdout
    assert "-        memory: 8Gi\n+        memory: 4Gi" in failed.stdout
    assert "-podmutate: a warning that never comes" in failed.stdout
    assert failed.stdout.splitlines()[-1] == "0 passed, 1 failed"
    updated = podmutate("test", "--update", str(tmp_path))
    assert updated.returncode == 0 and podmutate("test", str(tmp_path)).returncode == 0
    assert "memory: 4Gi" in expected.read_text()


def test_podmutate_test_names_a_bad_case_and_an_empty_directory(tmp_path):
    case = tmp_path / "bad"
    case.mkdir()
    (case / "pod.yaml").write_text(yaml.safe_dump(job_pod("sync")))
    (case / "config.yaml").write_text("failure_mode: sometimes\n")
    result = podmutate("test", str(tmp_path))
    assert result.returncode == 1
    assert "FAIL  bad: ConfigError: failure_mode: 'sometimes' is not valid" in result.stdout
    empty = tmp_path / "empty"
    empty.mkdir()
    nothing = podmutate("test", str(empty))
    assert nothing.returncode == 1 and "no case (a directory with pod.yaml) found" in nothing.stderr


def test_explain_names_the_plugin_and_the_setting_of_every_change():
    result = podmutate(
        "mutate",
        "-f",
        "examples/pods/sync.yaml",
        "--config",
        "examples/config.yaml",
        "--explain",
        env={"JOB_KUBE_MAIN_CONTAINER_IMAGE_PULL_POLICY": "Always"},
    )
    assert result.returncode == 0, result.stderr
    lines = {line.split()[1]: line for line in result.stdout.splitlines()[1:]}
    assert "profiles" in lines["/spec/nodeSelector"]
    assert "[job_types.sync.node_selector (examples/config.yaml)]" in lines["/spec/nodeSelector"]
    assert (
        "[job_types.default.image_pull_policy (env JOB_KUBE_MAIN_CONTAINER_IMAGE_PULL_POLICY)]"
        in lines["/spec/containers/0/imagePullPolicy"]
    )
    assert lines["/spec/initContainers"].split()[2:] == ["init_container"]
    assert set(lines["/spec/volumes"].split()[2:]) == {"tmp_volume,", "init_container"}
    patch = json.loads(
        podmutate(
            "mutate",
            "-f",
            "examples/pods/sync.yaml",
            "--config",
            "examples/config.yaml",
            "--patch",
            "-o",
            "json",
            env={"JOB_KUBE_MAIN_CONTAINER_IMAGE_PULL_POLICY": "Always"},
        ).stdout
    )
    assert sorted(lines) == sorted(operation["path"] for operation in patch)


def test_explain_of_a_connection_label_names_the_annotation_it_came_from():
    pod = job_pod("sync", labels={})
    pod["metadata"]["annotations"] = {"podmutate.io/connection-id": "c-1"}
    result = podmutate("mutate", "-f", "-", "--explain", input=json.dumps(pod))
    line = next(line for line in result.stdout.splitlines() if "/metadata/labels" in line)
    assert "connection_labels" in line and "[annotation podmutate.io/connection-id]" in line
