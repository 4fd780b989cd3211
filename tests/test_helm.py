"""The Helm chart (manifests/helm/podmutate): `helm lint`, and `helm template` against kustomize.

With its defaults the chart renders what the kustomize base does, and each overlay has the
values that render it: the same objects, field by field. The one object the chart leaves out is
its own namespace, which Helm makes (`--create-namespace`) and records as the release's.
"""

import subprocess

import pytest
import yaml

from tests.test_manifests import MANIFESTS, render

pytestmark = pytest.mark.served  # real servers, processes or sockets on this machine

CHART = f"{MANIFESTS}/helm/podmutate"
NAMESPACE = "podmutate-system"

# kustomize variant -> the chart values that render the same objects.
EQUIVALENTS = {
    "base": [],
    "overlays/self-signed": ["certificates.rotateEverySeconds=3600"],
    "overlays/cert-manager": ["certificates.mode=cert-manager"],
    "overlays/fail-closed": ["webhook.failurePolicy=Fail"],
    "overlays/community": ["launcher.extraResources={secrets}"],
    "overlays/autoscaling": ["autoscaling.enabled=true"],
    "overlays/monitoring": [
        "metrics.serviceMonitor.enabled=true",
        "metrics.prometheusRule.enabled=true",
        "metrics.dashboard.enabled=true",
        "metrics.secure=true",
    ],
}


def template(helm, *values, check=True):
    command = [helm, "template", "podmutate", CHART, "--namespace", NAMESPACE]
    for value in values:
        command += ["--set", value]
    result = subprocess.run(command, capture_output=True, text=True)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def objects(documents):
    return {
        (document["kind"], document["metadata"].get("namespace"), document["metadata"]["name"]): document
        for document in documents
        if document
    }


def test_helm_lint_passes_with_every_option_on(helm):
    on = [
        "autoscaling.enabled=true",
        "metrics.serviceMonitor.enabled=true",
        "metrics.prometheusRule.enabled=true",
        "metrics.dashboard.enabled=true",
        "metrics.secure=true",
    ]
    for values in ([], on, ["certificates.mode=cert-manager", *on]):
        result = subprocess.run(
            [helm, "lint", "--strict", CHART, *[part for value in values for part in ("--set", value)]],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("variant", EQUIVALENTS)
def test_the_chart_renders_what_kustomize_renders(helm, variant):
    kustomized = objects(render(variant))
    charted = objects(yaml.safe_load_all(template(helm, *EQUIVALENTS[variant]).stdout))
    kustomized.pop(("Namespace", None, NAMESPACE))
    assert sorted(charted) == sorted(kustomized)
    for key, expected in kustomized.items():
        assert charted[key] == expected, key


def test_values_reach_the_objects(helm):
    rendered = objects(
        yaml.safe_load_all(
            template(
                helm,
                "image.tag=0.2.0",
                "replicaCount=3",
                "webhook.timeoutSeconds=5",
                "webhook.excludedNamespaces={kube-system,monitoring}",
                "launcher.namespaces={jobs,etl}",
                "logging.format=json",
                "config=failure_mode: fail\n",
            ).stdout
        )
    )
    deployment = rendered[("Deployment", NAMESPACE, "podmutate")]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "ghcr.io/podmutate/podmutate:0.2.0" and deployment["spec"]["replicas"] == 3
    assert {"name": "PODMUTATE_LOG_FORMAT", "value": "json"} in container["env"]
    assert rendered[("PodDisruptionBudget", NAMESPACE, "podmutate")]["spec"]["minAvailable"] == 2
    webhooks = rendered[("MutatingWebhookConfiguration", None, "podmutate")]["webhooks"]
    assert {webhook["timeoutSeconds"] for webhook in webhooks} == {5}
    excluded = [webhook["namespaceSelector"]["matchExpressions"][0]["values"] for webhook in webhooks]
    assert excluded == [["kube-system", "monitoring", NAMESPACE]] * 3
    for namespace in ("jobs", "etl"):
        assert ("Role", namespace, "podmutate-launcher") in rendered
        assert rendered[("RoleBinding", namespace, "podmutate-launcher")]["subjects"][0]["namespace"] == namespace
    assert rendered[("ConfigMap", NAMESPACE, "podmutate-config")]["data"]["config.yaml"] == "failure_mode: fail\n"


def test_bad_values_are_refused_with_a_message(helm):
    result = template(helm, "certificates.mode=vault", check=False)
    assert result.returncode != 0 and "certificates.mode: self-managed or cert-manager" in result.stderr
    result = template(helm, "autoscaling.enabled=true", "autoscaling.minReplicas=1", check=False)
    assert result.returncode != 0 and "autoscaling.minReplicas: at least 2" in result.stderr


def test_the_safety_net_may_delete_job_pods_only_when_told_to(helm):
    def pod_verbs(*values):
        documents = objects(yaml.safe_load_all(template(helm, *values).stdout))
        (rule,) = documents[("Role", "jobs", "podmutate-safety-net")]["rules"]
        return rule["verbs"]

    assert pod_verbs() == ["get", "list", "watch"]
    assert pod_verbs("safetyNet.deletePods=true") == ["get", "list", "watch", "delete"]
    documents = objects(yaml.safe_load_all(template(helm, "safetyNet.rbac=false").stdout))
    assert not [key for key in documents if key[2].startswith("podmutate-safety-net")]
