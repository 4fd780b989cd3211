"""What every service account the manifests create can and cannot do, asked of the real API server.

Each variant's RBAC (namespaces, service accounts, roles and bindings) is applied for real, and
`kubectl auth can-i --as=system:serviceaccount:...` answers each row of the table.
"""

import subprocess

import pytest
import yaml

from tests.helpers import HERE, kubectl_binary

MANIFESTS = f"{HERE}/../manifests"
RBAC_KINDS = {"Namespace", "ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}
PODMUTATE = "system:serviceaccount:podmutate-system:podmutate"
LAUNCHER = "system:serviceaccount:jobs:podmutate-launcher"
SYSTEM_DEFAULT = "system:serviceaccount:podmutate-system:default"
JOBS_DEFAULT = "system:serviceaccount:jobs:default"
PROMETHEUS = "system:serviceaccount:monitoring:prometheus-k8s"  # kube-prometheus's scraper
CLUSTER = None

# (who, verb, resource, namespace, allowed in base)
TABLE = [
    (PODMUTATE, "get", "secrets/podmutate-tls", "podmutate-system", True),
    (PODMUTATE, "update", "secrets/podmutate-tls", "podmutate-system", True),
    (PODMUTATE, "create", "secrets", "podmutate-system", True),  # a create cannot be narrowed to a name
    (PODMUTATE, "get", "secrets/other", "podmutate-system", False),
    (PODMUTATE, "list", "secrets", "podmutate-system", False),
    (PODMUTATE, "get", "secrets/podmutate-tls", "jobs", False),
    (PODMUTATE, "patch", "mutatingwebhookconfigurations/podmutate", CLUSTER, True),
    (PODMUTATE, "patch", "mutatingwebhookconfigurations/other", CLUSTER, False),
    (PODMUTATE, "create", "pods", "podmutate-system", False),
    (PODMUTATE, "create", "pods", "jobs", False),
    (PODMUTATE, "create", "tokenreviews", CLUSTER, False),  # only to check scrapers' tokens (--metrics-secure)
    (PODMUTATE, "create", "subjectaccessreviews", CLUSTER, False),
    (PODMUTATE, "list", "pods", "jobs", True),  # the safety net: watch job pods, tell of unmutated ones
    (PODMUTATE, "watch", "pods", "jobs", True),
    (PODMUTATE, "create", "events", "jobs", True),
    (PODMUTATE, "delete", "pods", "jobs", False),  # only for action: recreate (safetyNet.deletePods)
    (PODMUTATE, "list", "pods", "default", False),
    (PODMUTATE, "update", "leases", "podmutate-system", True),
    (PODMUTATE, "update", "leases", "jobs", False),
    (LAUNCHER, "create", "pods", "jobs", True),
    (LAUNCHER, "delete", "pods", "jobs", True),
    (LAUNCHER, "list", "pods", "jobs", True),
    (LAUNCHER, "watch", "pods", "jobs", True),
    (LAUNCHER, "create", "pods/exec", "jobs", True),
    (LAUNCHER, "get", "secrets", "jobs", False),
    (LAUNCHER, "create", "pods", "podmutate-system", False),
    (LAUNCHER, "create", "pods/exec", "podmutate-system", False),
    (LAUNCHER, "get", "secrets/podmutate-tls", "podmutate-system", False),
    (LAUNCHER, "patch", "mutatingwebhookconfigurations/podmutate", CLUSTER, False),
    (LAUNCHER, "create", "pods", "default", False),
    (SYSTEM_DEFAULT, "get", "secrets/podmutate-tls", "podmutate-system", False),
    (SYSTEM_DEFAULT, "create", "pods", "podmutate-system", False),
    (JOBS_DEFAULT, "create", "pods", "jobs", False),
    (PROMETHEUS, "get", "/metrics", CLUSTER, False),
    (PROMETHEUS, "get", "pods", "podmutate-system", False),
]
# Where a variant differs from the base, and why.
DIFFERENCES = {
    "overlays/community": {(LAUNCHER, "get", "secrets", "jobs"): True},  # its launcher manages secrets, in jobs
    "overlays/cert-manager": {  # cert-manager writes the Secret and the caBundle: podmutate needs no API access
        (PODMUTATE, "get", "secrets/podmutate-tls", "podmutate-system"): False,
        (PODMUTATE, "update", "secrets/podmutate-tls", "podmutate-system"): False,
        (PODMUTATE, "create", "secrets", "podmutate-system"): False,
        (PODMUTATE, "patch", "mutatingwebhookconfigurations/podmutate", CLUSTER): False,
    },
    "overlays/monitoring": {  # metrics over HTTPS: podmutate asks who scrapes, Prometheus may read them
        (PODMUTATE, "create", "tokenreviews", CLUSTER): True,
        (PODMUTATE, "create", "subjectaccessreviews", CLUSTER): True,
        (PROMETHEUS, "get", "/metrics", CLUSTER): True,
    },
}
from tests.test_manifests import VARIANTS  # noqa: E402  every variant the manifests offer

SUBJECTS = (PODMUTATE, LAUNCHER, SYSTEM_DEFAULT, JOBS_DEFAULT, PROMETHEUS)


def rbac_of(variant):
    rendered = subprocess.run(
        [kubectl_binary(), "kustomize", f"{MANIFESTS}/{variant}"], capture_output=True, text=True, check=True
    ).stdout
    return [document for document in yaml.safe_load_all(rendered) if document and document["kind"] in RBAC_KINDS]


def can(kubectl, who, verb, resource, namespace):
    args = ["auth", "can-i", verb, resource, f"--as={who}"]
    args += ["-n", namespace] if namespace else []
    answer = kubectl(*args, check=False)
    assert answer.stdout.strip() in ("yes", "no"), answer.stderr
    return answer.stdout.strip() == "yes"


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_service_account_can_do_what_it_needs_and_nothing_more(kubectl, variant):
    documents = yaml.safe_dump_all(rbac_of(variant))
    kubectl("apply", "-f", "-", input=documents)
    try:
        expected = {row[:4]: row[4] for row in TABLE}
        expected.update(DIFFERENCES.get(variant, {}))
        actual = {key: can(kubectl, *key) for key in expected}
        table = "\n".join(
            f"{'yes' if allowed else 'no ':<4} {who.rsplit(':', 1)[1]:<20} {verb:<7} {resource:<42} "
            f"{namespace or '(cluster)'}"
            for (who, verb, resource, namespace), allowed in actual.items()
        )
        print(f"\n{variant}:\n{table}")
        assert actual == expected
        # Whatever the overlay: none of our accounts but podmutate's own reads the Secret with the CA key.
        readers = [who for who in SUBJECTS if can(kubectl, who, "get", "secrets/podmutate-tls", "podmutate-system")]
        assert readers in ([PODMUTATE], [])
    finally:
        kubectl(
            "delete",
            "--ignore-not-found",
            "--wait=false",
            "-f",
            "-",
            input=yaml.safe_dump_all([d for d in rbac_of(variant) if d["kind"] != "Namespace"]),
        )
