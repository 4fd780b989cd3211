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

from plugins.init_container import init_script
from webhook.contract import (
    CONFIG_DIR,
    INIT_CONTAINER,
    JOB_TYPE_LABEL,
    PIPES_DIR,
    STATUS_CHECK_ANNOTATION,
    SUCCESS_FILE,
)


def mutations():
    """The policy's mutations: an apply configuration, then a JSONPatch for the init container."""
    script = json.dumps(init_script())
    env = ", ".join(
        f'Object.spec.initContainers.env{{name: "{key}", value: "{value}"}}'
        for key, value in (
            ("PIPES_DIR", PIPES_DIR),
            ("CONFIG_DIR", CONFIG_DIR),
            ("SUCCESS_FILE", SUCCESS_FILE),
            ("USES_STDIN", "false"),
            ("TIMEOUT_SECONDS", "300"),
        )
    )
    init_container = f"""Object.spec.initContainers{{
      name: "{INIT_CONTAINER}", image: "busybox:1.35", workingDir: "{CONFIG_DIR}",
      command: ["sh", "-c", {script}],
      env: [{env}],
      volumeMounts: [
        Object.spec.initContainers.volumeMounts{{name: "airbyte-pipes", mountPath: "{PIPES_DIR}"}},
        Object.spec.initContainers.volumeMounts{{name: "airbyte-config", mountPath: "{CONFIG_DIR}"}}
      ]
    }}"""
    # The init container's command is an atomic list, which an apply configuration may not set:
    # it goes in with a JSONPatch, when the pod has no `init` yet. (A list of objects as a
    # JSONPatch value makes kube-apiserver 1.34.4 panic, so an empty list is added first.)
    add_init = f"""
(has(object.spec.initContainers) ? [] : [JSONPatch{{op: "add", path: "/spec/initContainers", value: []}}]) +
(has(object.spec.initContainers) && object.spec.initContainers.exists(c, c.name == "{INIT_CONTAINER}") ? [] :
  [JSONPatch{{op: "add", path: "/spec/initContainers/-", value: {init_container}}}])"""
    expression = f"""
Object{{
  metadata: Object.metadata{{
    annotations: {{"{STATUS_CHECK_ANNOTATION}":
      object.metadata.labels["{JOB_TYPE_LABEL}"] in ["spec", "check", "discover"] ? "1" : "30"}}
  }},
  spec: Object.spec{{
    volumes: [
      Object.spec.volumes{{name: "tmp", emptyDir: Object.spec.volumes.emptyDir{{}}}},
      Object.spec.volumes{{name: "airbyte-pipes", emptyDir: Object.spec.volumes.emptyDir{{}}}},
      Object.spec.volumes{{name: "airbyte-config", emptyDir: Object.spec.volumes.emptyDir{{medium: "Memory"}}}}
    ],
    containers: object.spec.containers.map(c, Object.spec.containers{{
      name: c.name,
      volumeMounts: c.name == "main" ? [
        Object.spec.containers.volumeMounts{{name: "tmp", mountPath: "/tmp"}},
        Object.spec.containers.volumeMounts{{name: "airbyte-pipes", mountPath: "{PIPES_DIR}"}},
        Object.spec.containers.volumeMounts{{name: "airbyte-config", mountPath: "{CONFIG_DIR}"}}
      ] : [Object.spec.containers.volumeMounts{{name: "tmp", mountPath: "/tmp"}}]
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
