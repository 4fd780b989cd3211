"""Certificates: real TLS handshakes (Python's ssl and openssl), rotation under load, CA roll-over."""

import datetime
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time

import pytest
import requests
from cryptography import x509

from certs import CA, CA_FILE, CERT_FILE, KEY_FILE, certificate_report, read_serving, service_names
from certs.rotation import ensure
from tests.test_cli import podmutate
from tools.harness.processes import serve
from webhook.files import write_atomically


def handshake(port, ca_file, hostname="127.0.0.1"):
    """Complete a verified TLS handshake; return the server's certificate."""
    context = ssl.create_default_context(cafile=ca_file)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=hostname) as tls:
            return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))


@pytest.fixture
def tls_server(tmp_path):
    """A bare TLS server over an issued pair, to handshake with; yields (port, directory)."""
    ca = CA.create()
    serving = ca.issue("localhost", "127.0.0.1", *service_names("podmutate", "podmutate-system"))
    (tmp_path / CA_FILE).write_bytes(ca.cert_pem())
    (tmp_path / CERT_FILE).write_bytes(serving.cert_pem())
    (tmp_path / KEY_FILE).write_bytes(serving.key_pem())
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / CERT_FILE, tmp_path / KEY_FILE)
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def accept():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            try:
                with context.wrap_socket(connection, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1], tmp_path
    stop.set()
    thread.join()
    listener.close()


@pytest.mark.served
def test_issued_certificate_verifies_by_name_and_ip(tls_server):
    port, directory = tls_server
    assert handshake(port, str(directory / CA_FILE), "127.0.0.1").subject
    assert handshake(port, str(directory / CA_FILE), "podmutate.podmutate-system.svc")
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        handshake(port, str(directory / CA_FILE), "other.example.com")


@pytest.mark.served
def test_a_client_trusting_another_ca_fails(tls_server, tmp_path_factory):
    port, _ = tls_server
    other = tmp_path_factory.mktemp("other") / "ca.crt"
    other.write_bytes(CA.create().cert_pem())
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        handshake(port, str(other))


@pytest.mark.served
@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_openssl_verifies_chain_names_and_purpose(tls_server):
    port, directory = tls_server
    verify = subprocess.run(
        [
            "openssl",
            "verify",
            "-CAfile",
            str(directory / CA_FILE),
            "-purpose",
            "sslserver",
            "-verify_hostname",
            "podmutate.podmutate-system.svc.cluster.local",
            str(directory / CERT_FILE),
        ],
        capture_output=True,
        text=True,
    )
    assert verify.returncode == 0, verify.stderr
    client = subprocess.run(
        [
            "openssl",
            "s_client",
            "-connect",
            f"127.0.0.1:{port}",
            "-CAfile",
            str(directory / CA_FILE),
            "-verify_ip",
            "127.0.0.1",
            "-verify_return_error",
        ],
        input="",
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert "Verify return code: 0 (ok)" in client.stdout, client.stdout + client.stderr


def test_extensions_are_those_of_a_serving_certificate():
    ca = CA.create(key_type="rsa")
    serving = ca.issue("podmutate.ns.svc", "10.0.0.7", key_type="rsa")
    extensions = serving.cert.extensions
    assert extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert x509.oid.ExtendedKeyUsageOID.SERVER_AUTH in extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert extensions.get_extension_for_class(x509.KeyUsage).value.key_encipherment is True
    assert (
        extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
        == ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.key_identifier
    )
    assert serving.names == ["podmutate.ns.svc", "10.0.0.7"]
    assert serving.key.key_size == 2048
    with pytest.raises(ValueError, match="at least 2048"):
        from certs import new_key

        new_key("rsa", rsa_bits=1024)


def test_ensure_is_idempotent_and_keys_are_private(tmp_path):
    first = ensure(tmp_path, ["localhost"])
    assert first.changed
    assert not ensure(tmp_path, ["localhost"]).changed
    for name in (KEY_FILE, "ca.key"):
        assert os.stat(tmp_path / name).st_mode & 0o777 == 0o600
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".")]


def test_ensure_renews_for_new_names_and_before_expiry(tmp_path):
    ensure(tmp_path, ["localhost"])
    serial = read_serving(tmp_path).cert.serial_number
    outcome = ensure(tmp_path, ["localhost", "podmutate.ns.svc"])
    assert outcome.actions == ["issued a serving certificate (it does not cover ['podmutate.ns.svc'])"]
    serial = read_serving(tmp_path).cert.serial_number
    soon = read_serving(tmp_path).not_after - datetime.timedelta(days=29)
    assert "expires" in ensure(tmp_path, ["localhost"], at=soon).actions[-1]
    assert read_serving(tmp_path).cert.serial_number != serial


def test_ca_roll_over_keeps_old_and_new_ca_in_the_bundle(tmp_path):
    # A CA of 400 days enters its 365-day renewal window after 35 days, while the serving
    # certificate it issued is still good for most of a year.
    ensure(tmp_path, ["127.0.0.1"], ca_days=400)
    old_ca = x509.load_pem_x509_certificate((tmp_path / CA_FILE).read_bytes())
    near_ca_expiry = old_ca.not_valid_before_utc + datetime.timedelta(days=40)
    outcome = ensure(tmp_path, ["127.0.0.1"], at=near_ca_expiry)
    bundle = x509.load_pem_x509_certificates((tmp_path / CA_FILE).read_bytes())
    assert [cert.serial_number for cert in bundle][1:] == [old_ca.serial_number]
    assert outcome.actions[0].startswith("created a new CA (the old one stays in the bundle")
    # The serving certificate, issued by the old CA, still verifies against the new bundle...
    lines, ok = certificate_report(tmp_path, at=near_ca_expiry)
    assert ok, lines
    # ...and once renewed it is issued by the new CA, which clients of the bundle trust too.
    renew_at = read_serving(tmp_path).not_after - datetime.timedelta(days=1)
    ensure(tmp_path, ["127.0.0.1"], at=renew_at)
    assert read_serving(tmp_path).cert.issuer == bundle[0].subject


def test_certs_show_fails_for_a_certificate_its_ca_did_not_issue(tmp_path):
    ensure(tmp_path, ["localhost"])
    good = podmutate("certs", "show", str(tmp_path))
    assert good.returncode == 0 and "one of them issued this certificate" in good.stdout
    assert "localhost" in good.stdout and "days left" in good.stdout
    write_atomically(str(tmp_path / CA_FILE), CA.create().cert_pem())
    bad = podmutate("certs", "show", str(tmp_path))
    assert bad.returncode == 1 and "NONE of them issued this certificate" in bad.stdout


@pytest.mark.served
def test_rotation_under_load_fails_no_request_and_a_broken_pair_is_refused(tmp_path):
    with serve(tmp_path, workers=2) as served:
        cert_dir = tmp_path / "certs"
        old_serial = handshake(served.port, served.ca_file).serial_number
        counts = {"ok": 0, "failed": 0}
        errors = []
        stop = threading.Event()

        def client():
            while not stop.is_set():
                try:
                    # A new connection each time: every request is a new handshake.
                    response = requests.get(served.url + "/healthz", verify=served.ca_file, timeout=5)
                    counts["ok" if response.status_code == 200 else "failed"] += 1
                except requests.RequestException as error:
                    counts["failed"] += 1
                    errors.append(repr(error))

        threads = [threading.Thread(target=client) for _ in range(2)]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        ca = CA.load((cert_dir / CA_FILE).read_bytes(), (cert_dir / "ca.key").read_bytes())
        fresh = ca.issue("localhost", "127.0.0.1")
        write_atomically(str(cert_dir / KEY_FILE), fresh.key_pem(), mode=0o600)
        write_atomically(str(cert_dir / CERT_FILE), fresh.cert_pem())
        deadline = time.monotonic() + 10
        while handshake(served.port, served.ca_file).serial_number != fresh.cert.serial_number:
            assert time.monotonic() < deadline, "the new certificate was not served within 10 s"
            time.sleep(0.1)
        time.sleep(1.5)  # both workers have had their look at the files
        stop.set()
        for thread in threads:
            thread.join()
        assert counts["failed"] == 0, errors[:3]
        assert counts["ok"] > 10
        assert old_serial != fresh.cert.serial_number

        # A key that does not match: refused, and the last good pair keeps serving.
        write_atomically(str(cert_dir / KEY_FILE), CA.create().key_pem(), mode=0o600)
        time.sleep(2.5)
        assert handshake(served.port, served.ca_file).serial_number == fresh.cert.serial_number
        assert "refused, keeping the last good one" in served.log()


def issue_with_validity(ca, not_before, not_after):
    """A serving pair from `ca` valid between the two times (which may both lie in the past or future)."""
    from cryptography.hazmat.primitives import hashes

    from certs import ServingCert, new_key

    key = new_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return ServingCert(cert, key)


def served_serial(reloading):
    """The serial number of the certificate a handshake with `reloading`'s context presents."""
    server_side, client_side = socket.socketpair()
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname, client.verify_mode = False, ssl.CERT_NONE
    result = {}

    def serve_one():
        try:
            with reloading.context().wrap_socket(server_side, server_side=True):
                pass
        except (ssl.SSLError, OSError):
            pass

    thread = threading.Thread(target=serve_one)
    thread.start()
    with client.wrap_socket(client_side) as tls:
        result["serial"] = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True)).serial_number
    thread.join(10)
    return result["serial"]


def write_pair(directory, serving):
    write_atomically(str(directory / KEY_FILE), serving.key_pem(), mode=0o600)
    write_atomically(str(directory / CERT_FILE), serving.cert_pem())


@pytest.mark.parametrize("badness", ["expired", "not yet valid", "from another CA", "unreadable"])
def test_a_pair_unfit_to_serve_is_refused_and_the_last_good_one_serves_new_workers_too(tmp_path, badness):
    from webhook.tls import ReloadingContext

    ca = CA.create()
    (tmp_path / CA_FILE).write_bytes(ca.cert_pem())
    good = ca.issue("localhost")
    write_pair(tmp_path, good)
    last_good = tmp_path / "last-good"
    reloading = ReloadingContext(
        str(tmp_path / CERT_FILE), str(tmp_path / KEY_FILE), interval=0, last_good_dir=str(last_good)
    )
    at = datetime.datetime.now(datetime.UTC)
    hour = datetime.timedelta(hours=1)
    if badness == "expired":
        write_pair(tmp_path, issue_with_validity(ca, at - 2 * hour, at - hour))
    elif badness == "not yet valid":
        write_pair(tmp_path, issue_with_validity(ca, at + hour, at + 2 * hour))
    elif badness == "from another CA":
        write_pair(tmp_path, CA.create().issue("localhost"))
    else:
        write_atomically(str(tmp_path / CERT_FILE), b"-----BEGIN CERTIFICATE-----\ngarbage\n")
    assert reloading.check() is False
    assert served_serial(reloading) == good.cert.serial_number
    # A worker respawned now, with the bad pair on disk, starts from the last good copy.
    respawned = ReloadingContext(str(tmp_path / CERT_FILE), str(tmp_path / KEY_FILE), last_good_dir=str(last_good))
    assert served_serial(respawned) == good.cert.serial_number


@pytest.mark.parametrize("corrupt", [CERT_FILE, "ca.key"])
def test_a_corrupt_managed_directory_is_repaired_not_a_crash(tmp_path, corrupt, caplog):
    ensure(tmp_path, ["localhost"])
    (tmp_path / corrupt).write_bytes(b"-----BEGIN JUNK-----\nnot base64 at all\n")
    outcome = ensure(tmp_path, ["localhost"])
    assert outcome.changed
    lines, ok = certificate_report(str(tmp_path))
    assert ok, lines
    assert "issued anew" in caplog.text or "a new CA replaces it" in caplog.text
