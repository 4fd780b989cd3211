"""The `podmutate` command, run as a user would."""

import json
import subprocess

import yaml

from tests.helpers import PODMUTATE, job_pod, review


def podmutate(*args, input=None, env=None):
    return subprocess.run([*PODMUTATE, *args], capture_output=True, text=True, input=input, env=env)


def test_mutate_a_multi_document_stream_passes_non_pods_through():
    stream = yaml.safe_dump_all([job_pod("sync"), {"apiVersion": "v1", "kind": "ConfigMap",
                                                   "metadata": {"name": "c"}, "data": {"a": "b"}}])
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
    assert {"op": "add", "path": "/metadata/annotations", "value": {"podmutate.io/status-check-interval": "1"}} \
        in patch


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
    assert result.stderr.strip() == ("Error: invalid configuration: job_types.check.resources.limits.cpu: "
                                     "'lots' is not valid: expected a Kubernetes quantity such as 500m, 2 or 1Gi")


def test_serve_refuses_to_start_on_a_bad_configuration(tmp_path):
    path = tmp_path / "podmutate.yaml"
    path.write_text("failure_mode: sometimes\n")
    result = podmutate("serve", "--config", str(path), "--cert-dir", str(tmp_path / "certs"))
    assert result.returncode == 1
    assert "failure_mode: 'sometimes'" in result.stderr
