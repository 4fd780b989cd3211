"""`serve --metrics-secure` against the real API server: /metrics over HTTPS, verified against
podmutate's CA, for the tokens the API server authenticates (TokenReview) and allows to get
/metrics (SubjectAccessReview, RBAC on); every other request refused with a line saying why."""

import json
import uuid

import pytest
import requests
import yaml

from tests.test_manifests import MANIFESTS
from tools.harness.processes import metric_samples, serve

READER_ROLE = f"{MANIFESTS}/overlays/monitoring/metrics-rbac.yaml"


@pytest.fixture(scope="module")
def accounts(kubectl):
    """Tokens of three accounts: podmutate's own (bound to system:auth-delegator, as the
    monitoring overlay binds it), a scraper bound to podmutate-metrics-reader, and one with no
    role at all."""
    namespace = f"metrics-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", namespace)
    for name in ("podmutate", "scraper", "stranger"):
        kubectl("-n", namespace, "create", "serviceaccount", name)
    role, reader = [document for document in yaml.safe_load_all(open(READER_ROLE)) if document][1:]
    kubectl("apply", "-f", "-", input=json.dumps(role))
    reader["metadata"]["name"] = f"podmutate-metrics-reader-{namespace}"
    reader["subjects"] = [{"kind": "ServiceAccount", "name": "scraper", "namespace": namespace}]
    kubectl("apply", "-f", "-", input=json.dumps(reader))
    kubectl(
        "create",
        "clusterrolebinding",
        f"podmutate-auth-delegator-{namespace}",
        "--clusterrole=system:auth-delegator",
        f"--serviceaccount={namespace}:podmutate",
    )
    tokens = {
        name: kubectl("-n", namespace, "create", "token", name).stdout.strip()
        for name in ("podmutate", "scraper", "stranger")
    }
    yield {**tokens, "namespace": namespace}
    kubectl(
        "delete", "clusterrolebinding", f"podmutate-auth-delegator-{namespace}", f"podmutate-metrics-reader-{namespace}"
    )


@pytest.fixture(scope="module")
def secured(control_plane, accounts, tmp_path_factory):
    """podmutate serving its metrics securely, asking the API server as its own account."""
    kubeconfig = tmp_path_factory.mktemp("podmutate-account") / "kubeconfig"
    with open(control_plane.kubeconfig) as stream:
        config = yaml.safe_load(stream)
    config["users"] = [{"name": "podmutate", "user": {"token": accounts["podmutate"]}}]
    for context in config["contexts"]:
        context["context"]["user"] = "podmutate"
    kubeconfig.write_text(yaml.safe_dump(config))
    with serve(tmp_path_factory.mktemp("secure"), args=("--metrics-secure", "--kubeconfig", str(kubeconfig))) as served:
        yield served


def scrape(served, token=None, path="/metrics"):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    url = f"https://127.0.0.1:{served.metrics_port}{path}"
    return requests.get(url, headers=headers, verify=served.ca_file, timeout=15)


def test_an_allowed_token_reads_the_metrics_over_verified_https(secured, accounts):
    assert secured.get("/healthz").status_code == 200
    answer = scrape(secured, accounts["scraper"])
    assert answer.status_code == 200, answer.text
    assert ("podmutate_certificate_expiry_seconds", (("certificate", "serving"),)) in metric_samples(answer.text)
    assert scrape(secured, accounts["scraper"]).status_code == 200  # the kept verdict


def test_no_token_is_401_naming_what_is_missing(secured):
    answer = scrape(secured)
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"].startswith("Bearer")
    assert answer.text == "a bearer token is needed: Authorization: Bearer <token>\n"


def test_a_token_the_api_server_does_not_know_is_401(secured, accounts):
    forged = accounts["scraper"][:-4] + ("AAAA" if not accounts["scraper"].endswith("AAAA") else "BBBB")
    for token in (forged, "not-a-token"):
        answer = scrape(secured, token)
        assert answer.status_code == 401, answer.text
        assert answer.text.startswith("the token is not valid")
        assert token not in answer.text


def test_a_known_account_without_the_role_is_403(secured, accounts):
    answer = scrape(secured, accounts["stranger"])
    assert answer.status_code == 403
    assert answer.text == f"system:serviceaccount:{accounts['namespace']}:stranger may not get /metrics\n"


def test_other_paths_are_404_and_plain_http_gets_no_answer(secured, accounts):
    assert scrape(secured, accounts["scraper"], "/debug").status_code == 404
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{secured.metrics_port}/metrics", timeout=15)
