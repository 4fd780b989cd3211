"""Hostile job pods: one field grown until the AdmissionReview has a given size, for each way a pod
creator can make a review big (containers, env, volumes, tolerations, annotations, depth).

The shapes are what the API server lets through to a webhook: any number of list items or map
entries, and (for a webhook called directly) any nesting.
"""

import orjson

from bench.pods import review


def _job_pod(**spec):
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "hostile", "namespace": "jobs", "labels": {"job_type": "sync"}},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "busybox"}], **spec},
    }


def containers(count):
    return _job_pod(containers=[{"name": f"c{index}", "image": "busybox"} for index in range(count)])


def bare_containers(count):
    """Containers of a name alone: the most mutation (a /tmp mount each) per byte."""
    return _job_pod(containers=[{"name": f"c{index}"} for index in range(count)])


def init_containers(count):
    return _job_pod(initContainers=[{"name": f"i{index}", "image": "busybox"} for index in range(count)])


def env(count):
    variables = [{"name": f"V{index}", "value": "x"} for index in range(count)]
    return _job_pod(containers=[{"name": "main", "image": "busybox", "env": variables}])


def volumes(count):
    return _job_pod(volumes=[{"name": f"v{index}", "emptyDir": {}} for index in range(count)])


def tolerations(count):
    return _job_pod(tolerations=[{"key": f"k{index}", "operator": "Exists"} for index in range(count)])


def annotations(count):
    pod = _job_pod()
    pod["metadata"]["annotations"] = {f"example.com/a{index}": "v" for index in range(count)}
    return pod


def deep(levels):
    """A value nested `levels` deep where a pod keeps free-form data (only a direct caller can send it)."""
    nested: object = "leaf"
    for _ in range(levels):
        nested = {"a": nested}
    pod = _job_pod()
    pod["spec"]["containers"][0]["extra"] = nested
    return pod


SHAPES = {
    "containers": containers,
    "bare_containers": bare_containers,
    "init_containers": init_containers,
    "env": env,
    "volumes": volumes,
    "tolerations": tolerations,
    "annotations": annotations,
}


def sized(shape, body_bytes):
    """The AdmissionReview body (bytes) of a `shape` pod grown to about `body_bytes`."""
    make = SHAPES[shape]
    unit = len(orjson.dumps(review(make(1001)))) - len(orjson.dumps(review(make(1))))
    count = max(1, int(body_bytes / (unit / 1000)))
    return orjson.dumps(review(make(count)))
