"""Shared test helpers: pods, reviews, patches, free ports, and a real `podmutate serve`."""

import base64
import contextlib
import copy
import json
import os
import shutil
import subprocess
import sys

import jsonpatch

HERE = os.path.dirname(os.path.abspath(__file__))
FAST_TIER = "PODMUTATE_FAST_TIER"  # set by tests/conftest.py when only the unit tier runs


def examples(count):
    """How many examples a property test generates: `count`, or a tenth of it in the fast tier."""
    return max(count // 10, 20) if os.environ.get(FAST_TIER) else count


def job_pod(
    job_type="sync", *, name="source-pg-sync-1-0-abcde", containers=None, labels=None, annotations=None, **spec
):
    """A pod as Airbyte creates it, labelled with `job_type` (None: not a job pod)."""
    all_labels = {"job_type": job_type} if job_type else {}
    all_labels.update(labels or {})
    metadata = {"name": name, "namespace": "jobs", "labels": all_labels}
    if annotations:
        metadata["annotations"] = annotations
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {
            "restartPolicy": "Never",
            "containers": containers or [{"name": "main", "image": "airbyte/source-postgres:3.6.2"}],
            **spec,
        },
    }


def decode_patch(answer):
    """The JSONPatch of an AdmissionReview answer, decoded ([] when it carries none)."""
    response = answer["response"]
    if "patch" not in response:
        return []
    assert response["patchType"] == "JSONPatch"
    return json.loads(base64.b64decode(response["patch"]))


def apply_answer(pod, answer):
    """`pod` with the answer's patch applied, as the API server would."""
    return jsonpatch.apply_patch(copy.deepcopy(pod), decode_patch(answer))


# What an e2e or node session started, whose log tails a failed test of that tier reports:
# tier -> (the thing started, with a tail(name, lines) method; its log names; lines of each).
RUNNING_LOGS = {}


@contextlib.contextmanager
def running(tier, started, names, lines=40):
    """Hold `started` (a control plane, a cluster) for `tier`: a failed test of the tier reports
    the tail of its logs `names`; stopped at the end, however it ends."""
    RUNNING_LOGS[tier] = (started, names, lines)
    try:
        yield started
    finally:
        RUNNING_LOGS.pop(tier, None)
        started.stop()


def kubectl_binary():
    """A kubectl within one minor version of the 1.34 API servers of the tests, when the machine has one."""
    for name in ("kubectl.1.34", "kubectl.1.35", "kubectl.1.33", "kubectl"):
        if shutil.which(name):
            return name
    return None


def helm_binary():
    """The helm CLI built from its Go module by tools/helm/build.sh (cached); None without Go."""
    result = subprocess.run(["sh", f"{HERE}/../tools/helm/build.sh"], capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else None


EXAMPLE_PLUGIN = os.path.join(HERE, "example_plugin")


def example_plugin_path(tmp_path_factory, source=EXAMPLE_PLUGIN):
    """Install a plugin package (the test's example by default) into a private directory; return
    it (for PYTHONPATH)."""
    target = tmp_path_factory.mktemp("plugin-package")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            source,
        ],
        check=True,
        capture_output=True,
    )
    return str(target)
