"""The manifests on a real API server, and `podmutate doctor` against a live configuration."""

import copy
import os
import subprocess

import pytest
import yaml

from certs import CA_FILE
from certs.rotation import ensure
from tests.e2e.conftest import register
from tests.helpers import HERE
from tests.test_manifests import MANIFESTS, VARIANTS, render
from tools.harness.processes import PODMUTATE

# cert-manager's kinds need its CRDs, which this API server does not have: they are checked for
# their fields in tests/test_manifests.py, and left out of the server-side dry run here. The
# prometheus-operator's CRDs are generated from its API module (tools/monitoring/crds.sh) and
# installed, so its kinds are checked by the API server against the operator's own schemas.
NEEDS_CRDS = {"cert-manager.io/v1"}
MONITORING = "monitoring.coreos.com/v1"
MONITORING_CRDS = ("servicemonitors", "prometheusrules")


@pytest.fixture(scope="module")
def podmutate_namespace(core, kubectl):
    # A server-side dry run creates nothing, so the namespaces the objects live in must exist.
    existing = {item.metadata.name for item in core.list_namespace().items}
    for name in {"podmutate-system", "jobs"} - existing:
        core.create_namespace({"metadata": {"name": name}})
    monitoring_crds(kubectl)


def monitoring_crds(kubectl):
    """The prometheus-operator's ServiceMonitor and PrometheusRule CRDs, installed and established."""
    result = subprocess.run(["sh", f"{HERE}/../tools/monitoring/crds.sh"], capture_output=True, text=True)
    if result.returncode != 0:
        reason = f"the prometheus-operator CRDs could not be generated: {result.stderr.strip()[-300:]}"
        pytest.fail(reason) if os.environ.get("CI") else pytest.skip(reason)
    directory = result.stdout.strip()
    names = [f"crd/{name}.monitoring.coreos.com" for name in MONITORING_CRDS]
    for name in MONITORING_CRDS:
        kubectl("apply", "--server-side", "-f", f"{directory}/monitoring.coreos.com_{name}.yaml")
    kubectl("wait", "--for=condition=Established", "--timeout=60s", *names)


def test_kubectl_apply_k_base_is_accepted(kubectl, podmutate_namespace):
    result = kubectl("apply", "-k", f"{MANIFESTS}/base", "--dry-run=server")
    assert (
        "mutatingwebhookconfiguration.admissionregistration.k8s.io/podmutate created (server dry run)" in result.stdout
    )
    assert "deployment.apps/podmutate created (server dry run)" in result.stdout


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_rendered_object_is_accepted_by_the_api_server(kubectl, podmutate_namespace, variant):
    documents = [document for document in render(variant) if document["apiVersion"] not in NEEDS_CRDS]
    result = kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump_all(documents))
    assert result.stdout.count("(server dry run)") == len(documents), result.stdout


def doctor(control_plane, name, *args):
    return subprocess.run(
        [*PODMUTATE, "doctor", "--webhook-config", name, "--kubeconfig", control_plane.kubeconfig, *args],
        capture_output=True,
        text=True,
    )


def test_doctor_on_a_live_configuration_checks_the_served_certificate(
    admissionregistration, kubectl, control_plane, podmutate, namespace, tmp_path
):
    name = register(admissionregistration, kubectl, podmutate.url, podmutate.ca_file, namespace)
    good = doctor(control_plane, name)
    assert good.returncode == 0, good.stdout
    assert (
        f"ok    {name}/{name}.podmutate.io: caBundle verifies the certificate served at {podmutate.url}" in good.stdout
    )
    assert "warn  safety net: no Lease" in good.stdout  # no podmutate serve here holds one

    ensure(tmp_path / "other", ["127.0.0.1"])
    wrong = register(
        admissionregistration,
        kubectl,
        podmutate.url,
        str(tmp_path / "other" / CA_FILE),
        namespace,
        name=f"wrong-{namespace}",
        probe=False,
    )
    result = doctor(control_plane, wrong)
    assert result.returncode == 1
    assert (
        f"fail  {wrong}/{wrong}.podmutate.io: caBundle does not verify the certificate served at {podmutate.url}/mutate"
    ) in result.stdout


def test_the_monitoring_objects_meet_the_prometheus_operator_schemas(kubectl, podmutate_namespace):
    documents = [document for document in render("overlays/monitoring") if document["apiVersion"] == MONITORING]
    assert sorted(document["kind"] for document in documents) == ["PrometheusRule", "ServiceMonitor"]
    result = kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump_all(documents))
    assert result.stdout.count("(server dry run)") == 2, result.stdout
    # The schema is enforced: a rule whose `for` is no duration is refused.
    rule = copy.deepcopy(next(document for document in documents if document["kind"] == "PrometheusRule"))
    rule["spec"]["groups"][0]["rules"][0]["for"] = "five minutes"
    refused = kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(rule), check=False)
    assert refused.returncode != 0 and "for" in refused.stderr, refused.stderr
