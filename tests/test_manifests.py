"""manifests/: what kustomize renders, and `podmutate doctor` on it and on broken variants."""

import copy
import subprocess

import pytest
import yaml

from tests.helpers import HERE, kubectl_binary
from tools.harness.processes import PODMUTATE
from webhook.ops.doctor import check, disjoint, from_documents, selector_matches, worst_case_seconds

pytestmark = pytest.mark.served  # real servers, processes or sockets on this machine

MANIFESTS = f"{HERE}/../manifests"
VARIANTS = [
    "base",
    "overlays/self-signed",
    "overlays/cert-manager",
    "overlays/fail-closed",
    "overlays/community",
    "overlays/network-policy",
    "overlays/autoscaling",
    "overlays/monitoring",
]


def kubectl():
    return kubectl_binary() or pytest.fail("kubectl is not installed")


def render(variant):
    result = subprocess.run([kubectl(), "kustomize", f"{MANIFESTS}/{variant}"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return [document for document in yaml.safe_load_all(result.stdout) if document]


def by_kind(documents, kind, name=None):
    return [
        document
        for document in documents
        if document["kind"] == kind and (name is None or document["metadata"]["name"] == name)
    ]


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_renders_a_safe_configuration(variant):
    documents = render(variant)
    (configuration,) = by_kind(documents, "MutatingWebhookConfiguration")
    for webhook in configuration["webhooks"]:
        assert webhook["sideEffects"] == "None"
        assert webhook["admissionReviewVersions"] == ["v1"]
        assert webhook["reinvocationPolicy"] == "IfNeeded"
        assert webhook["timeoutSeconds"] <= 5
        assert webhook["rules"] == [
            {
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "operations": ["CREATE"],
                "resources": ["pods"],
                "scope": "Namespaced",
            }
        ]
        assert webhook["failurePolicy"] == ("Fail" if variant == "overlays/fail-closed" else "Ignore")
    assert not [finding for finding in check(*from_documents(documents), name="podmutate") if finding.level == "fail"]


def test_the_deployment_is_locked_down_and_highly_available():
    (deployment,) = by_kind(render("base"), "Deployment")
    spec = deployment["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert deployment["spec"]["replicas"] == 2
    assert spec["topologySpreadConstraints"] and spec["affinity"]["podAntiAffinity"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "https", "scheme": "HTTPS"}
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["resources"]["requests"] and container["resources"]["limits"]
    (budget,) = by_kind(render("base"), "PodDisruptionBudget")
    assert budget["spec"]["minAvailable"] == 1


def test_rbac_has_one_rule_per_api_group_and_no_wildcards():
    for variant in VARIANTS:
        for role in by_kind(render(variant), "Role") + by_kind(render(variant), "ClusterRole"):
            groups = [group for rule in role["rules"] for group in rule.get("apiGroups", [])]
            assert len(groups) == len(set(groups)), role["metadata"]["name"]
            for rule in role["rules"]:  # a rule names resources of API groups, or non-resource URLs
                named = rule.get("nonResourceURLs") or rule["apiGroups"] + rule["resources"]
                assert "*" not in named + rule["verbs"]
    (launcher,) = by_kind(render("base"), "Role", "podmutate-launcher")
    assert launcher["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["pods", "pods/exec", "events"],
            "verbs": ["get", "list", "watch", "create", "delete"],
        }
    ]
    (community,) = by_kind(render("overlays/community"), "Role", "podmutate-launcher")
    assert community["rules"][0]["resources"] == ["pods", "pods/exec", "events", "secrets"]
    (configuration_role,) = by_kind(render("base"), "ClusterRole", "podmutate-webhook-configuration")
    assert configuration_role["rules"][0]["resourceNames"] == ["podmutate"]


def test_cert_manager_mode_mounts_the_secret_and_needs_no_api_access():
    documents = render("overlays/cert-manager")
    (deployment,) = by_kind(documents, "Deployment")
    spec = deployment["spec"]["template"]["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert {"name": "certs", "secret": {"secretName": "podmutate-tls", "defaultMode": 0o440}} in spec["volumes"]
    assert not [arg for arg in spec["containers"][0]["args"] if arg.startswith(("--cert-secret", "--webhook-config"))]
    assert not by_kind(documents, "ClusterRole") and not by_kind(documents, "Role", "podmutate-certificates")
    (configuration,) = by_kind(documents, "MutatingWebhookConfiguration")
    assert configuration["metadata"]["annotations"] == {"cert-manager.io/inject-ca-from": "podmutate-system/podmutate"}
    (certificate,) = by_kind(documents, "Certificate", "podmutate")
    assert "podmutate.podmutate-system.svc" in certificate["spec"]["dnsNames"]


def broken(change):
    documents = copy.deepcopy(render("base"))
    (configuration,) = by_kind(documents, "MutatingWebhookConfiguration")
    change(configuration["webhooks"][0])
    return documents


def doctor(documents):
    return subprocess.run(
        [*PODMUTATE, "doctor", "-f", "-"], input=yaml.safe_dump_all(documents), capture_output=True, text=True
    )


def test_doctor_passes_the_base():
    result = doctor(render("base"))
    assert result.returncode == 0, result.stdout
    assert "fail" not in result.stdout


@pytest.mark.parametrize(
    "change, line",
    [
        (
            lambda webhook: webhook["namespaceSelector"]["matchExpressions"][0].update(values=["kube-system"]),
            "fail  podmutate/job-type.podmutate.io: namespace podmutate-system is not excluded",
        ),
        (
            lambda webhook: webhook.pop("namespaceSelector"),
            "fail  podmutate/job-type.podmutate.io: namespace kube-system is not excluded",
        ),
        (
            lambda webhook: webhook.update(sideEffects="Unknown"),
            "fail  podmutate/job-type.podmutate.io: sideEffects Unknown: the API server refuses --dry-run=server",
        ),
        (lambda webhook: webhook.update(timeoutSeconds=30), "fail  mutating webhooks: up to 60s on one pod creation"),
        (
            lambda webhook: webhook.update(
                clientConfig={"url": "https://127.0.0.1:1/mutate", "caBundle": "bm90IHBlbQ=="}
            ),
            "fail  podmutate/job-type.podmutate.io: caBundle is not a base64 PEM bundle",
        ),
    ],
)
def test_doctor_fails_each_broken_variant_with_the_right_line(change, line):
    result = doctor(broken(change))
    assert result.returncode == 1
    assert line in result.stdout, result.stdout


def test_selectors():
    assert selector_matches(None, {"a": "b"})
    assert selector_matches({"matchExpressions": [{"key": "x", "operator": "NotIn", "values": ["1"]}]}, {})
    assert not selector_matches({"matchLabels": {"a": "b"}}, {"a": "c"})
    exists = {"matchExpressions": [{"key": "t", "operator": "Exists"}]}
    absent = {"matchExpressions": [{"key": "t", "operator": "DoesNotExist"}]}
    sync = {"matchLabels": {"job_type": "sync"}}
    assert disjoint(exists, absent) and disjoint(sync, {"matchLabels": {"job_type": "check"}})
    assert not disjoint(exists, sync)
    webhook = {
        "rules": [{"apiGroups": [""], "operations": ["CREATE"], "resources": ["pods"]}],
        "timeoutSeconds": 3,
        "reinvocationPolicy": "IfNeeded",
    }
    assert worst_case_seconds([{**webhook, "objectSelector": exists}, {**webhook, "objectSelector": absent}]) == 6
    assert worst_case_seconds([{**webhook, "objectSelector": exists}, {**webhook, "objectSelector": sync}]) == 12


def test_budget_counts_only_webhooks_that_can_meet_one_pod_however_many_there_are():
    webhook = {
        "rules": [{"apiGroups": [""], "operations": ["CREATE"], "resources": ["pods"]}],
        "timeoutSeconds": 3,
        "reinvocationPolicy": "IfNeeded",
    }
    per_namespace = [
        {**webhook, "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": f"ns-{n}"}}} for n in range(40)
    ]
    assert worst_case_seconds(per_namespace) == 6
    shared = {**webhook, "timeoutSeconds": 1, "reinvocationPolicy": "Never"}
    assert worst_case_seconds([*per_namespace, shared]) == 7
