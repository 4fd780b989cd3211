"""Idempotence: mutating the mutated pod yields an empty patch, for every plugin and job type."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import job_pod
from webhook import admission
from webhook.engine import load_engine
from webhook.plugins import BUILTIN_PLUGINS, builtin_name

JOB_TYPES = ["spec", "check", "discover", "sync", "orchestrator"]
MUTATING = [builtin_name(module) for module in BUILTIN_PLUGINS if builtin_name(module) != "classify"]
PROFILE = {
    "node_selector": {"pool": "jobs"},
    "tolerations": [{"key": "jobs", "operator": "Exists", "effect": "NoSchedule"}],
    "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
    "image_pull_secrets": ["registry"],
    "image_pull_policy": "Always",
    "annotations": {"example.com/cost": "ingest"},
    "labels": {"example.com/tier": "gold"},
    "env": {"LOG_LEVEL": "INFO"},
}


def config_with_only(plugin=None, mode="fill"):
    disabled = [name for name in MUTATING if plugin and name != plugin]
    return load_engine(
        environ={}, overrides={"disable_plugins": disabled, "job_types": {"default": {**PROFILE, "mode": mode}}}
    )


CONFIGS = {
    (plugin, mode): config_with_only(plugin, mode) for plugin in [None, *MUTATING] for mode in ("fill", "override")
}

names = st.sampled_from(["main", "sidecar", "relay-stdout", "remote-stdin"])
mounts = st.lists(
    st.sampled_from(
        [
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "scratch", "mountPath": "/tmp/"},
            {"name": "data", "mountPath": "/data"},
            {"name": "airbyte-config", "mountPath": "/config"},
        ]
    ),
    max_size=3,
    unique_by=lambda mount: mount["mountPath"].rstrip("/"),
)
containers = st.lists(
    st.fixed_dictionaries(
        {"name": names, "image": st.just("busybox:1.35")},
        optional={
            "volumeMounts": mounts,
            "env": st.lists(
                st.sampled_from(
                    [
                        {"name": "CONNECTION_ID", "value": "c-1"},
                        {"name": "LOG_LEVEL", "value": "WARN"},
                        {"name": "JOB_ID", "value": "bad value!"},
                    ]
                ),
                max_size=2,
                unique_by=lambda variable: variable["name"],
            ),
            "resources": st.sampled_from([{}, {"requests": {"cpu": "2"}}, {"limits": {"memory": "100Mi"}}]),
            "imagePullPolicy": st.sampled_from(["Never", "IfNotPresent"]),
        },
    ),
    min_size=1,
    max_size=4,
    unique_by=lambda container: container["name"],
)
volumes = st.lists(
    st.sampled_from(
        [
            {"name": "tmp", "configMap": {"name": "x"}},
            {"name": "tmp", "emptyDir": {}},
            {"name": "scratch", "emptyDir": {}},
            {"name": "data", "persistentVolumeClaim": {"claimName": "d"}},
            {"name": "airbyte-config", "emptyDir": {"medium": "Memory"}},
        ]
    ),
    max_size=3,
    unique_by=lambda volume: volume["name"],
)
annotations = st.dictionaries(
    st.sampled_from(
        [
            "podmutate.io/tmp-volume",
            "podmutate.io/init-wait",
            "podmutate.io/uses-stdin",
            "podmutate.io/connection-id",
            "podmutate.io/fix-permissions",
            "podmutate.io/status-check-interval",
        ]
    ),
    st.sampled_from(["true", "false", "data", "tmp,data", "c-2", "7"]),
    max_size=4,
)
init_containers = st.lists(
    st.sampled_from(
        [{"name": "init", "image": "mine"}, {"name": "setup", "image": "x"}, {"name": "fix-permissions", "image": "y"}]
    ),
    max_size=2,
    unique_by=lambda container: container["name"],
)


@st.composite
def pods(draw):
    pod = job_pod(
        draw(st.sampled_from(JOB_TYPES)),
        containers=draw(containers),
        annotations=draw(annotations) or None,
        labels=draw(
            st.dictionaries(
                st.sampled_from(["connection_id", "example.com/tier"]), st.sampled_from(["c-9", "silver"]), max_size=2
            )
        ),
    )
    if (job_type := pod["metadata"]["labels"].pop("job_type")) == "orchestrator":
        pod["metadata"]["labels"]["sync_step"] = "orchestrator-replication"
    else:
        pod["metadata"]["labels"]["job_type"] = job_type
    for key, strategy in (
        ("volumes", volumes),
        ("initContainers", init_containers),
        ("nodeSelector", st.dictionaries(st.just("pool"), st.just("mine"), max_size=1)),
        ("securityContext", st.sampled_from([{}, {"runAsUser": 1000, "runAsGroup": 1000}])),
    ):
        if value := draw(strategy):
            pod["spec"][key] = value
    return pod


@pytest.mark.parametrize("plugin, mode", CONFIGS, ids=lambda value: str(value))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pod=pods())
def test_mutating_twice_adds_nothing(plugin, mode, pod):
    engine = CONFIGS[(plugin, mode)]
    first = admission.mutate(pod, engine)
    assert first.job_type is not None
    second = admission.mutate(first.pod, engine)
    assert second.patch == [], f"second run of {plugin or 'all plugins'} changed: {second.patch}"


@pytest.mark.parametrize("job_type", JOB_TYPES)
def test_every_job_type_is_idempotent_with_every_plugin(job_type):
    pod = job_pod(
        job_type if job_type != "orchestrator" else None,
        labels={"sync_step": "orchestrator-replication"} if job_type == "orchestrator" else None,
    )
    engine = CONFIGS[(None, "override")]
    first = admission.mutate(pod, engine)
    assert first.job_type == job_type and first.patch
    assert admission.mutate(first.pod, engine).patch == []
