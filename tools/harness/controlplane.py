"""A real kube-apiserver + etcd on 127.0.0.1, as envtest runs them, for the end-to-end tests."""

import base64
import os
import shutil
import subprocess
import time

import requests
import yaml
from cryptography.hazmat.primitives.asymmetric import rsa

from certs import CA, key_pem
from tools.harness.processes import free_port, stop_process

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD_SCRIPT = os.path.join(REPO, "tools", "controlplane", "build.sh")
BINARIES = ("kube-apiserver", "etcd")
TOKEN = "podmutate-e2e-token"
AUDIT_POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
    resources: [{group: "", resources: [pods]}]
    verbs: [create]
  - level: None
"""
HOW_TO_GET = (
    "end-to-end tests need kube-apiserver and etcd: install Go (tools/controlplane/build.sh "
    "builds them once), or set KUBEBUILDER_ASSETS to a directory holding both"
)


def flags(settings):
    """`--name=value` for each setting, in order."""
    return [f"--{name}={value}" for name, value in settings.items()]


def etcd_command(binaries, data_dir, client_port, peer_port, *extra):
    """etcd on loopback, one member, without fsync (a test's data need not survive a power cut)."""
    client, peer = f"http://127.0.0.1:{client_port}", f"http://127.0.0.1:{peer_port}"
    settings = {
        "data-dir": data_dir,
        "listen-client-urls": client,
        "advertise-client-urls": client,
        "listen-peer-urls": peer,
        "initial-advertise-peer-urls": peer,
        "initial-cluster": f"default={peer}",
        "unsafe-no-fsync": "true",
    }
    return [os.path.join(binaries, "etcd"), *flags(settings), *extra]


def apiserver_command(
    binaries, *, etcd_url, port, cert_file, key_file, tokens, sa_key, sa_public, service_range, issuer, extra=()
):
    """kube-apiserver with token authentication, RBAC and MutatingAdmissionPolicy on; `extra` adds."""
    settings = {
        "etcd-servers": etcd_url,
        "secure-port": port,
        "tls-cert-file": cert_file,
        "tls-private-key-file": key_file,
        "token-auth-file": tokens,
        "service-cluster-ip-range": service_range,
        "service-account-issuer": issuer,
        "service-account-key-file": sa_public,
        "service-account-signing-key-file": sa_key,
        "allow-privileged": "true",
        "feature-gates": "MutatingAdmissionPolicy=true",
        "runtime-config": "admissionregistration.k8s.io/v1beta1=true",
    }
    return [os.path.join(binaries, "kube-apiserver"), *flags(settings), *extra]


def kubeconfig(name, url, ca_pem, token):
    """A kubeconfig for `url` (its CA given as PEM) as a bearer of `token`."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": name,
        "clusters": [
            {"name": name, "cluster": {"server": url, "certificate-authority-data": base64.b64encode(ca_pem).decode()}}
        ],
        "users": [{"name": "admin", "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": "admin"}}],
    }


def has_both(directory):
    return bool(directory) and all(os.access(os.path.join(directory, name), os.X_OK) for name in BINARIES)


def find_binaries():
    """The directory holding both binaries, building them if Go is here; None when impossible."""
    if has_both(os.environ.get("KUBEBUILDER_ASSETS")):
        return os.environ["KUBEBUILDER_ASSETS"]
    if shutil.which("go") is None and not os.environ.get("PODMUTATE_CONTROLPLANE_CACHE"):
        return None
    result = subprocess.run([BUILD_SCRIPT], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"building the control plane failed:\n{result.stderr[-4000:]}")
    directory = result.stdout.strip().splitlines()[-1]
    return directory if has_both(directory) else None


class ControlPlane:
    """etcd and kube-apiserver started in `workdir`; stop() ends both."""

    def __init__(self, binaries, workdir, *, audit=True):
        self.binaries = binaries
        self.workdir = str(workdir)
        self.audit = audit  # pod creations in an audit log (the benchmarks leave it out: it costs each create)
        self.processes = {}
        self.logs = {}
        self.port = None
        self.kubeconfig = os.path.join(self.workdir, "kubeconfig")

    def start(self, timeout=90):
        started = time.monotonic()
        self._start_etcd()
        self._start_apiserver()
        self._wait_ready(timeout)
        self._write_kubeconfig()
        self.start_seconds = time.monotonic() - started
        return self

    def _spawn(self, name, command):
        log_path = os.path.join(self.workdir, f"{name}.log")
        self.logs[name] = log_path
        with open(log_path, "wb") as log:
            self.processes[name] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)

    def _start_etcd(self):
        client, peer = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client}"
        self._spawn("etcd", etcd_command(self.binaries, os.path.join(self.workdir, "etcd"), client, peer))
        self._wait(lambda: requests.get(f"{self.etcd_url}/health", timeout=2).ok, "etcd", 30)

    def _start_apiserver(self):
        ca = CA.create("podmutate e2e apiserver CA")
        serving = ca.issue("127.0.0.1", "localhost")
        self.ca_file = self._write("apiserver-ca.crt", ca.cert_pem())
        cert_file = self._write("apiserver.crt", serving.cert_pem())
        key_file = self._write("apiserver.key", serving.key_pem())
        sa_key = self._write("sa.key", key_pem(rsa.generate_private_key(public_exponent=65537, key_size=2048)))
        tokens = self._write("tokens.csv", f'{TOKEN},admin,admin-uid,"system:masters"\n'.encode())
        # Pod creations at Metadata level: enough for the annotations webhooks leave (auditAnnotations).
        audit_policy = self._write("audit-policy.yaml", AUDIT_POLICY.encode())
        self.audit_log = os.path.join(self.workdir, "audit.log")
        audit = [f"--audit-policy-file={audit_policy}", f"--audit-log-path={self.audit_log}"] if self.audit else []
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self._spawn(
            "kube-apiserver",
            apiserver_command(
                self.binaries,
                etcd_url=self.etcd_url,
                port=self.port,
                cert_file=cert_file,
                key_file=key_file,
                tokens=tokens,
                sa_key=sa_key,
                sa_public=sa_key,
                service_range="10.0.0.0/24",
                issuer=f"https://127.0.0.1:{self.port}",
                extra=[
                    "--bind-address=127.0.0.1",
                    f"--cert-dir={os.path.join(self.workdir, 'apiserver-certs')}",
                    "--authorization-mode=RBAC",
                    "--disable-admission-plugins=ServiceAccount",
                    *audit,
                ],
            ),
        )

    def _write(self, name, data):
        path = os.path.join(self.workdir, name)
        with open(path, "wb") as stream:
            stream.write(data)
        os.chmod(path, 0o600)
        return path

    def _wait(self, probe, name, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.processes[name].poll() is not None:
                raise RuntimeError(f"{name} exited with {self.processes[name].returncode}:\n{self.tail(name)}")
            try:
                if probe():
                    return
            except requests.RequestException:
                pass
            time.sleep(0.25)
        raise RuntimeError(f"{name} not ready after {timeout}s:\n{self.tail(name)}")

    def _wait_ready(self, timeout):
        self._wait(
            lambda: (
                requests.get(
                    f"{self.url}/readyz", verify=self.ca_file, timeout=2, headers={"Authorization": f"Bearer {TOKEN}"}
                ).ok
            ),
            "kube-apiserver",
            timeout,
        )

    def _write_kubeconfig(self):
        with open(self.ca_file, "rb") as stream:
            config = kubeconfig("e2e", self.url, stream.read(), TOKEN)
        with open(self.kubeconfig, "w") as stream:
            yaml.safe_dump(config, stream)

    def tail(self, name, lines=40):
        try:
            with open(self.logs[name], encoding="utf-8", errors="replace") as stream:
                return "".join(stream.readlines()[-lines:])
        except (KeyError, OSError):
            return ""

    def stop(self):
        for name in ("kube-apiserver", "etcd"):
            if name in self.processes:
                stop_process(self.processes[name])
