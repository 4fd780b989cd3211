"""Certificates for the webhook: a CA, serving certificates, and the files they live in.

Reads like trustme: ``ca = CA.create()``, then ``ca.issue("localhost", "127.0.0.1")``.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from webhook.files import read_bounded

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

CA_FILE = "ca.crt"
CA_KEY_FILE = "ca.key"
CERT_FILE = "tls.crt"
KEY_FILE = "tls.key"

KEY_TYPES = ("ecdsa", "rsa")
CA_DAYS = 5 * 365
SERVING_DAYS = 365
SERVING_RENEW_DAYS = 30
CA_RENEW_DAYS = 365
CLOCK_SKEW = datetime.timedelta(minutes=5)
MAX_PEM_BYTES = 1024 * 1024  # a bundle of a few certificates is a few KiB


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def new_key(key_type: str = "ecdsa", rsa_bits: int = 2048) -> PrivateKey:
    """A private key: ECDSA P-256 by default, or RSA of at least 2048 bits."""
    if key_type == "ecdsa":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa":
        if rsa_bits < 2048:
            raise ValueError(f"RSA keys must have at least 2048 bits, not {rsa_bits}")
        return rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
    raise ValueError(f"key type {key_type!r}: expected one of {KEY_TYPES}")


def load_key(data: bytes) -> PrivateKey:
    """A PEM private key of the kinds podmutate issues (ECDSA, RSA); ValueError for anything else."""
    key = serialization.load_pem_private_key(data, None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ValueError(f"a {type(key).__name__} key: expected ECDSA or RSA")
    return key


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def service_host(service: str, namespace: str) -> str:
    """The name the API server calls Service `service` in `namespace` by (the TLS server name)."""
    return f"{service}.{namespace}.svc"


def service_names(service: str, namespace: str) -> list[str]:
    """The DNS names the API server may use to reach Service `service` in `namespace`."""
    host = service_host(service, namespace)
    return [service, f"{service}.{namespace}", host, f"{host}.cluster.local"]


def default_names() -> list[str]:
    """What a certificate for a server on this machine should cover."""
    names = ["localhost", "127.0.0.1"]
    hostname = socket.gethostname()
    if hostname and hostname not in names:
        names.append(hostname)
    return names


def serving_names(service: str | None = None, namespace: str = "default") -> list[str]:
    """The names podmutate's serving certificate covers: this machine's, or a Service's.

    For a Service, the pod's own host name is left out: every replica then asks for the same
    names, so a pair one replica issued satisfies the others.
    """
    if service:
        return ["localhost", "127.0.0.1", *service_names(service, namespace)]
    return default_names()


def general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


@dataclass(frozen=True)
class ServingCert:
    """A serving certificate and its key."""

    cert: x509.Certificate
    key: PrivateKey

    @property
    def names(self) -> list[str]:
        """The DNS names and IP addresses (as strings) the certificate is valid for."""
        san = self.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        return [str(name) for name in san.get_values_for_type(x509.DNSName) + san.get_values_for_type(x509.IPAddress)]

    @property
    def not_after(self) -> datetime.datetime:
        return self.cert.not_valid_after_utc

    def cert_pem(self) -> bytes:
        return cert_pem(self.cert)

    def key_pem(self) -> bytes:
        return key_pem(self.key)


def key_usage(*, key_cert_sign: bool = False, key_encipherment: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        key_encipherment=key_encipherment,
        key_cert_sign=key_cert_sign,
        crl_sign=key_cert_sign,
        content_commitment=False,
        data_encipherment=False,
        key_agreement=False,
        encipher_only=False,
        decipher_only=False,
    )


def signed(
    subject: x509.Name,
    public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
    issuer: x509.Name,
    signing_key: PrivateKey,
    not_after: datetime.datetime,
    extensions: list[tuple[x509.ExtensionType, bool]],
) -> x509.Certificate:
    """The one place a certificate is built: valid from a little before now (clock skew)."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now() - CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(signing_key, hashes.SHA256())


@dataclass(frozen=True)
class CA:
    """A certificate authority that issues serving (and, for test clusters, client) certificates."""

    cert: x509.Certificate
    key: PrivateKey

    @classmethod
    def create(cls, common_name: str = "podmutate webhook CA", *, key_type: str = "ecdsa", days: int = CA_DAYS) -> CA:
        key = new_key(key_type)
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "podmutate"),
                x509.NameAttribute(NameOID.COMMON_NAME, f"{common_name} {now():%Y-%m-%d %H:%M:%S}"),
            ]
        )
        extensions: list[tuple[x509.ExtensionType, bool]] = [
            (x509.BasicConstraints(ca=True, path_length=0), True),
            (key_usage(key_cert_sign=True), True),
        ]
        cert = signed(subject, key.public_key(), subject, key, now() + datetime.timedelta(days=days), extensions)
        return cls(cert, key)

    @classmethod
    def load(cls, cert_data: bytes, key_data: bytes) -> CA:
        return cls(x509.load_pem_x509_certificate(cert_data), load_key(key_data))

    def _issue(
        self, subject: x509.Name, key: PrivateKey, days: float, extensions: list[tuple[x509.ExtensionType, bool]]
    ) -> x509.Certificate:
        ski = self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        not_after = min(now() + datetime.timedelta(days=days), self.cert.not_valid_after_utc)
        extensions = [
            (x509.BasicConstraints(ca=False, path_length=None), True),
            *extensions,
            (x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), False),
        ]
        return signed(subject, key.public_key(), self.cert.subject, self.key, not_after, extensions)

    def issue(self, *names: str, key_type: str = "ecdsa", days: float = SERVING_DAYS) -> ServingCert:
        """Issue a serving certificate for DNS names and IP addresses (given as strings)."""
        if not names:
            raise ValueError("a serving certificate needs at least one DNS name or IP address")
        key = new_key(key_type)
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "podmutate"),
                x509.NameAttribute(NameOID.COMMON_NAME, names[0][:64]),
            ]
        )
        extensions: list[tuple[x509.ExtensionType, bool]] = [
            (key_usage(key_encipherment=key_type == "rsa"), True),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
            (x509.SubjectAlternativeName([general_name(name) for name in names]), False),
        ]
        return ServingCert(self._issue(subject, key, days, extensions), key)

    def issue_client(self, user: str, group: str | None = None, *, days: float = 30) -> ServingCert:
        """A client certificate for a Kubernetes API server's x509 authentication: the common name
        is the user, the organization the group."""
        key = new_key()
        subject = [x509.NameAttribute(NameOID.COMMON_NAME, user)]
        if group:
            subject.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, group))
        extensions: list[tuple[x509.ExtensionType, bool]] = [
            (key_usage(), True),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False),
        ]
        return ServingCert(self._issue(x509.Name(subject), key, days, extensions), key)

    def cert_pem(self) -> bytes:
        return cert_pem(self.cert)

    def key_pem(self) -> bytes:
        return key_pem(self.key)


def read_bytes(path: str) -> bytes:
    """The file's content, read as the configuration is (a regular file of at most MAX_PEM_BYTES:
    a FIFO as tls.key must not hang a handshake); empty when it does not exist."""
    try:
        return read_bounded(path, MAX_PEM_BYTES)
    except FileNotFoundError:
        return b""


def load_bundle(data: bytes) -> list[x509.Certificate]:
    """Every certificate in a PEM bundle."""
    return x509.load_pem_x509_certificates(data) if data.strip() else []


def issued_by(cert: x509.Certificate, ca_cert: x509.Certificate) -> bool:
    """True when `ca_cert` signed `cert`."""
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def read_serving(directory: str) -> ServingCert | None:
    """The ServingCert in `directory`, or None when tls.crt or tls.key is missing."""
    try:
        with open(os.path.join(directory, CERT_FILE), "rb") as stream:
            cert = x509.load_pem_x509_certificate(stream.read())
        with open(os.path.join(directory, KEY_FILE), "rb") as stream:
            key = load_key(stream.read())
    except FileNotFoundError:
        return None
    return ServingCert(cert, key)


def certificate_report(directory: str, at: datetime.datetime | None = None) -> tuple[list[str], bool]:
    """What `podmutate certs show` prints, and whether the pair is good: (lines, ok)."""
    at = at or now()
    serving = read_serving(directory)
    if serving is None:
        return [f"{directory}: no {CERT_FILE} and {KEY_FILE}"], False
    bundle = load_bundle(read_bytes(os.path.join(directory, CA_FILE)))
    days_left = (serving.not_after - at).total_seconds() / 86400
    signed = any(issued_by(serving.cert, ca_cert) for ca_cert in bundle)
    key_matches = serving.cert.public_key() == serving.key.public_key()
    lines = [
        f"subject:    {serving.cert.subject.rfc4514_string()}",
        f"names:      {', '.join(serving.names)}",
        f"issuer:     {serving.cert.issuer.rfc4514_string()}",
        f"not after:  {serving.not_after:%Y-%m-%d %H:%M:%S} UTC ({days_left:.0f} days left)",
        f"CA bundle:  {len(bundle)} certificate(s) in {CA_FILE}; "
        + ("one of them issued this certificate" if signed else "NONE of them issued this certificate"),
    ]
    if not key_matches:
        lines.append(f"key:        {KEY_FILE} does NOT match {CERT_FILE}")
    if days_left <= 0:
        lines.append("EXPIRED")
    return lines, signed and key_matches and days_left > 0
