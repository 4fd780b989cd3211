"""Hostile job pods: one field grown until the AdmissionReview has a given size, for each way a pod
creator can make a review big (containers, env, volumes, tolerations, annotations, depth).

The shapes are what the API server lets through to a webhook: any number of list items or map
entries, and (for a webhook called directly) any nesting.
"""

import orjson

from tools.harness.pods import review


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


# Property-based generation (hypothesis) of what a pod creator or a configuration writer may send.
from hypothesis import strategies as st  # noqa: E402  # the shapes above need no hypothesis

ODD_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)
NUMBERS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
)
SCALARS = st.one_of(
    st.none(), st.booleans(), NUMBERS, ODD_TEXT, st.sampled_from(["1Gi", "NaN", "1e3Gi", "/tmp", "main"])
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: st.one_of(st.lists(children, max_size=6), st.dictionaries(ODD_TEXT, children, max_size=6)),
    max_leaves=40,
)
POD_PLACES = (
    ("spec",),
    ("metadata",),
    ("metadata", "labels"),
    ("metadata", "annotations"),
    ("spec", "containers", 0),
    ("spec", "containers", 0, "resources"),
    ("spec", "containers", 0, "resources", "limits"),
    ("spec", "containers", 0, "volumeMounts"),
    ("spec", "volumes"),
    ("spec", "initContainers"),
    ("spec", "tolerations"),
    ("spec", "resources"),
)
FIELD_NAMES = st.one_of(
    ODD_TEXT,
    st.sampled_from(
        [
            "name",
            "image",
            "env",
            "volumeMounts",
            "mountPath",
            "resources",
            "requests",
            "limits",
            "cpu",
            "memory",
            "containers",
            "initContainers",
            "volumes",
            "emptyDir",
            "labels",
            "annotations",
            "job_type",
            "airbyte",
        ]
    ),
)


@st.composite
def hostile_pods(draw):
    """A job pod with hostile values put in the places plugins read, grown wide or deep at times."""
    pod = _job_pod()
    for _ in range(draw(st.integers(1, 4))):
        place = draw(st.sampled_from(POD_PLACES))
        parent = pod
        for step in place[:-1]:
            child = parent[step] if isinstance(parent, dict) and step in parent else None
            if isinstance(parent, list) and isinstance(step, int) and step < len(parent):
                child = parent[step]
            if not isinstance(child, dict | list):
                break
            parent = child
        else:
            value = draw(JSON_VALUES)
            last = place[-1]
            if isinstance(parent, dict):
                if draw(st.booleans()) and isinstance(parent.get(last), dict):
                    parent[last][draw(FIELD_NAMES)] = value
                else:
                    parent[last] = value
            elif isinstance(parent, list) and isinstance(last, int):
                parent.insert(min(last, len(parent)), value)
    grow = draw(st.sampled_from([None, "wide", "deep"]))
    if grow == "wide" and isinstance(pod.get("spec"), dict):
        shape = draw(st.sampled_from(sorted(SHAPES)))
        grown = SHAPES[shape](draw(st.integers(1, 30_000)))
        pod["spec"].update(grown["spec"])
        pod["metadata"] = grown["metadata"] if not isinstance(pod.get("metadata"), dict) else pod["metadata"]
    elif grow == "deep":
        pod = deep(draw(st.integers(50, 1000)))
    return pod


# Configuration values may also have keys that are not strings (YAML allows any scalar as a key).
CONFIG_VALUES = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=6),
        st.dictionaries(st.one_of(ODD_TEXT, NUMBERS, st.booleans()), children, max_size=6),
    ),
    max_leaves=40,
)
CONFIG_KEYS = st.sampled_from(
    [
        "failure_mode",
        "max_body_bytes",
        "review_timeout_seconds",
        "mutated_by_annotation",
        "disable_plugins",
        "job_types",
        "tmp_volume",
        "init_container",
        "connection_labels",
        "profiles",
    ]
)


@st.composite
def hostile_config_files(draw):
    """YAML a configuration writer may leave: real keys with hostile values, anchors and aliases,
    deep or wide nesting, odd numbers, and plain garbage."""
    kind = draw(st.sampled_from(["values", "aliases", "deep", "garbage"]))
    if kind == "values":
        import yaml

        document = draw(st.dictionaries(CONFIG_KEYS, CONFIG_VALUES, min_size=1, max_size=4))
        return yaml.safe_dump(document, allow_unicode=True, sort_keys=False)
    if kind == "aliases":
        levels, width = draw(st.integers(2, 12)), draw(st.integers(2, 12))
        lines = ['a0: &a0 "' + "x" * draw(st.integers(1, 5000)) + '"']
        lines += [f"a{level}: &a{level} [{', '.join([f'*a{level - 1}'] * width)}]" for level in range(1, levels)]
        return "\n".join(lines) + f"\n{draw(CONFIG_KEYS)}: *a{levels - 1}\n"
    if kind == "deep":
        depth = draw(st.integers(10, 5000))
        opener, closer = draw(st.sampled_from([("[", "]"), ("{a: ", "}")]))
        return f"{draw(CONFIG_KEYS)}: {opener * depth}1{closer * depth}\n"
    return draw(st.text(max_size=300))
