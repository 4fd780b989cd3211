"""caBundle injection on a real API server: the CLI, and `podmutate serve` keeping it in step."""

import base64
import datetime
import subprocess

from certs import CA_FILE
from certs.rotation import ensure
from tests.e2e.conftest import register, wait_effective
from tools.harness.processes import PODMUTATE, serve


def ca_bundles(admissionregistration, name):
    configuration = admissionregistration.read_mutating_webhook_configuration(name)
    return [base64.b64decode(webhook.client_config.ca_bundle or "") for webhook in configuration.webhooks]


def test_certs_inject_sets_and_keeps_the_ca_bundle(
    admissionregistration, kubectl, control_plane, podmutate, namespace, tmp_path
):
    name = register(admissionregistration, kubectl, podmutate.url, podmutate.ca_file, namespace)
    ensure(tmp_path, ["127.0.0.1"])
    command = [
        *PODMUTATE,
        "certs",
        "inject",
        "--webhook-config",
        name,
        "--ca",
        str(tmp_path / CA_FILE),
        "--kubeconfig",
        control_plane.kubeconfig,
    ]
    first = subprocess.run(command, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    assert f"caBundle set for {name}.podmutate.io" in first.stdout
    assert ca_bundles(admissionregistration, name) == [(tmp_path / CA_FILE).read_bytes()]
    again = subprocess.run(command, capture_output=True, text=True)
    assert again.returncode == 0 and "already in step" in again.stdout
    missing = subprocess.run([*command[:6], "no-such-config", *command[7:]], capture_output=True, text=True)
    assert missing.returncode == 1
    assert missing.stderr.strip() == "Error: no-such-config: 404 Not Found"


def test_serve_injects_its_own_ca_and_the_api_server_then_trusts_it(
    admissionregistration, kubectl, control_plane, namespace, tmp_path
):
    # Registered with a CA that did not issue the server's certificate: nothing would verify...
    ensure(tmp_path / "other", ["127.0.0.1"])
    name = register(
        admissionregistration, kubectl, "https://127.0.0.1:1", str(tmp_path / "other" / CA_FILE), namespace, probe=False
    )
    # ...until `podmutate serve --webhook-config` publishes its own bundle.
    args = ["--webhook-config", name, "--kubeconfig", control_plane.kubeconfig]
    with serve(tmp_path, args=args) as served:
        assert ca_bundles(admissionregistration, name) == [(tmp_path / "certs" / CA_FILE).read_bytes()]
        configuration = admissionregistration.read_mutating_webhook_configuration(name)
        configuration.webhooks[0].client_config.url = served.url + "/mutate"
        admissionregistration.replace_mutating_webhook_configuration(name, configuration)
        wait_effective(kubectl, namespace)


def test_replicas_share_one_set_of_certificates_through_a_secret(api_client, core, namespace, tmp_path):
    from certs import CERT_FILE, read_serving
    from certs.rotation import Keeper
    from certs.secret import SecretStore

    names = ["podmutate", f"podmutate.{namespace}.svc"]
    first = Keeper(tmp_path / "a", names, store=SecretStore(api_client, namespace, "podmutate-tls"))
    second = Keeper(tmp_path / "b", names, store=SecretStore(api_client, namespace, "podmutate-tls"))
    first.run_once()
    second.run_once()
    assert (tmp_path / "a" / CERT_FILE).read_bytes() == (tmp_path / "b" / CERT_FILE).read_bytes()
    secret = core.read_namespaced_secret("podmutate-tls", namespace)
    assert secret.type == "kubernetes.io/tls"
    assert sorted(secret.data) == ["ca.crt", "ca.key", "tls.crt", "tls.key"]

    # One replica renews (its clock says the certificate is due); the other takes the renewal.
    due = read_serving(tmp_path / "a").not_after - datetime.timedelta(days=1)
    Keeper(tmp_path / "a", names, store=SecretStore(api_client, namespace, "podmutate-tls"), at=due).run_once()
    renewed = (tmp_path / "a" / CERT_FILE).read_bytes()
    assert renewed != (tmp_path / "b" / CERT_FILE).read_bytes()
    second.run_once()
    assert (tmp_path / "b" / CERT_FILE).read_bytes() == renewed


def test_replicas_that_start_together_agree_on_one_ca(api_client, namespace, tmp_path):
    """Both replicas read 'no Secret' before either stores one: the second must adopt, not overwrite."""
    import threading

    from certs import CA_FILE, CERT_FILE
    from certs.rotation import Keeper
    from certs.secret import SecretStore

    both_read = threading.Barrier(2, timeout=20)

    class RacingStore(SecretStore):
        first_pull = True

        def pull(self, directory):
            seen = super().pull(directory)
            if self.first_pull:
                self.first_pull = False
                both_read.wait()
            return seen

    names = ["podmutate", f"podmutate.{namespace}.svc"]
    keepers = [
        Keeper(tmp_path / replica, names, store=RacingStore(api_client, namespace, "podmutate-tls"))
        for replica in ("a", "b")
    ]
    threads = [threading.Thread(target=keeper.run_once) for keeper in keepers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    stored, _ = SecretStore(api_client, namespace, "podmutate-tls").read()
    for replica in ("a", "b"):
        assert (tmp_path / replica / CA_FILE).read_bytes() == stored[CA_FILE]
        assert (tmp_path / replica / CERT_FILE).read_bytes() == stored[CERT_FILE]
