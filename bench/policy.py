"""The zero-hop alternative: podmutate's built-in mutations, as far as CEL can do them, as a
MutatingAdmissionPolicy (admissionregistration.k8s.io/v1beta1, Kubernetes 1.34, feature gate on).

What it does: the status-check-interval annotation per job type, the /tmp, pipes and config
volumes, the /tmp mount in every container, the pipes and config mounts in `main`, and the
init container with podmutate's init script (its parameters as env, as podmutate passes them).

What CEL cannot do here, and the policy leaves out:
- connection labels from annotations: a policy reads only name, generateName and labels of
  the metadata, so podmutate.io/connection-id and friends are out of its reach;
- the env var fallback (CONNECTION_ID in any container) needs a search that applies the first
  match, and the warn-or-deny decision on a missing id needs a warning channel policies lack;
- "fill, don't clobber" for resources with the request-above-limit guard, and Airbyte's
  environment variables: a policy's values are fixed in the object (or a param resource);
- volume-name collisions (tmp-1 when `tmp` is taken) and not shadowing an existing /tmp mount:
  apply configurations merge lists by key, they cannot pick a free name;
- fix-permissions' chown init container inserted first (apply configurations cannot order);
- the stdin pipe on `podmutate.io/uses-stdin`: annotations are not readable.
"""

import json

from plugins import init_container, profiles
from plugins.init_container import init_script
from webhook.contract import (
    CONFIG_DIR,
    INIT_CONTAINER,
    JOB_TYPE_LABEL,
    MAIN_CONTAINER,
    PIPES_DIR,
    STATUS_CHECK_ANNOTATION,
    SUCCESS_FILE,
)

# The mutations, as data: rendered to CEL for the policy (and Kyverno), and to JSON for the
# controller-runtime peer (bench/controller_runtime), so that all three do the same work.
TMP_MOUNT = {"name": "tmp", "mountPath": "/tmp"}
VOLUMES = [
    {"name": "tmp", "emptyDir": {}},
    {"name": "airbyte-pipes", "emptyDir": {}},
    {"name": "airbyte-config", "emptyDir": {"medium": "Memory"}},
]
MAIN_MOUNTS = [
    TMP_MOUNT,
    {"name": "airbyte-pipes", "mountPath": PIPES_DIR},
    {"name": "airbyte-config", "mountPath": CONFIG_DIR},
]
OTHER_MOUNTS = [TMP_MOUNT]


def main_pull_policy() -> str:
    """The pull policy every main container gets, from the default profile."""
    return profiles.config_defaults()["job_types"]["default"]["image_pull_policy"]


def status_check_intervals() -> tuple[list[str], str, str]:
    """(the job types with an interval of their own, theirs, everyone else's), from the profiles' defaults."""
    job_types = profiles.config_defaults()["job_types"]
    own = {name: str(job_type["status_check_interval"]) for name, job_type in job_types.items() if name != "default"}
    (fast,) = set(own.values())
    return sorted(own), fast, str(job_types["default"]["status_check_interval"])


def the_init_container() -> dict:
    """podmutate's init container as the policy adds it: its script, its parameters as env."""
    defaults = init_container.config_defaults()["init_container"]
    env = {
        "PIPES_DIR": PIPES_DIR,
        "CONFIG_DIR": CONFIG_DIR,
        "SUCCESS_FILE": SUCCESS_FILE,
        "USES_STDIN": "false",
        "TIMEOUT_SECONDS": str(round(defaults["timeout_minutes"] * 60)),
    }
    return {
        "name": INIT_CONTAINER,
        "image": defaults["image"],
        "workingDir": CONFIG_DIR,
        "command": ["sh", "-c", init_script()],
        "env": [{"name": key, "value": value} for key, value in env.items()],
        "volumeMounts": MAIN_MOUNTS[1:],
    }


def peer_mutations() -> dict:
    """The same mutations for the controller-runtime peer (its --mutations file)."""
    fast_job_types, fast, interval = status_check_intervals()
    return {
        "jobTypeLabel": JOB_TYPE_LABEL,
        "statusAnnotation": STATUS_CHECK_ANNOTATION,
        "fastJobTypes": fast_job_types,
        "fastInterval": fast,
        "interval": interval,
        "volumes": VOLUMES,
        "mainContainer": MAIN_CONTAINER,
        "mainPullPolicy": main_pull_policy(),
        "mainMounts": MAIN_MOUNTS,
        "otherMounts": OTHER_MOUNTS,
        "initContainer": the_init_container(),
    }


def cel(value: object, kind: str) -> str:
    """`value` as a CEL literal; an object as the apply configuration type `kind` (Object.spec...)."""
    if isinstance(value, dict):
        fields = ", ".join(f"{key}: {cel(item, f'{kind}.{key}')}" for key, item in value.items())
        return f"{kind}{{{fields}}}"
    if isinstance(value, list):
        return f"[{', '.join(cel(item, kind) for item in value)}]"
    return json.dumps(value)


def mutations():
    """The policy's mutations: an apply configuration, then a JSONPatch for the init container."""
    fast_job_types, fast, interval = status_check_intervals()
    init = cel(the_init_container(), "Object.spec.initContainers")
    main_mounts = cel(MAIN_MOUNTS, "Object.spec.containers.volumeMounts")
    other_mounts = cel(OTHER_MOUNTS, "Object.spec.containers.volumeMounts")
    # The init container's command is an atomic list, which an apply configuration may not set:
    # it goes in with a JSONPatch, when the pod has no `init` yet. (A list of objects as a
    # JSONPatch value makes kube-apiserver 1.34.4 panic, so an empty list is added first.)
    add_init = f"""
(has(object.spec.initContainers) ? [] : [JSONPatch{{op: "add", path: "/spec/initContainers", value: []}}]) +
(has(object.spec.initContainers) && object.spec.initContainers.exists(c, c.name == "{INIT_CONTAINER}") ? [] :
  [JSONPatch{{op: "add", path: "/spec/initContainers/-", value: {init}}}])"""
    expression = f"""
Object{{
  metadata: Object.metadata{{
    annotations: {{"{STATUS_CHECK_ANNOTATION}":
      object.metadata.labels["{JOB_TYPE_LABEL}"] in {json.dumps(fast_job_types)} ? "{fast}" : "{interval}"}}
  }},
  spec: Object.spec{{
    volumes: {cel(VOLUMES, "Object.spec.volumes")},
    containers: object.spec.containers.map(c, Object.spec.containers{{
      name: c.name,
      imagePullPolicy: c.name == "{MAIN_CONTAINER}" ? "{main_pull_policy()}" : c.imagePullPolicy,
      volumeMounts: c.name == "{MAIN_CONTAINER}" ? {main_mounts} : {other_mounts}
    }})
  }}
}}"""
    return [
        {"patchType": "ApplyConfiguration", "applyConfiguration": {"expression": expression}},
        {"patchType": "JSONPatch", "jsonPatch": {"expression": add_init}},
    ]


POD_CREATES = {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}
JOB_POD = {
    "name": "job-pod",
    "expression": f'has(object.metadata.labels) && "{JOB_TYPE_LABEL}" in object.metadata.labels',
}


def mutating_admission_policy(name="podmutate-equivalent"):
    return {
        "apiVersion": "admissionregistration.k8s.io/v1beta1",
        "kind": "MutatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "matchConstraints": {"resourceRules": [POD_CREATES]},
            "matchConditions": [JOB_POD],
            "failurePolicy": "Fail",
            "reinvocationPolicy": "IfNeeded",
            "mutations": mutations(),
        },
    }


def binding(namespace, name="podmutate-equivalent"):
    return {
        "apiVersion": "admissionregistration.k8s.io/v1beta1",
        "kind": "MutatingAdmissionPolicyBinding",
        "metadata": {"name": f"{name}-{namespace}"},
        "spec": {
            "policyName": name,
            "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}},
        },
    }
