"""The controller-runtime peer: what a user who finds Python too slow writes instead, in Go.

main.go is a minimal webhook on controller-runtime's webhook server (TLS, HTTP, the
AdmissionReview decoding, the patch diff): the MutatingAdmissionPolicy's mutations of
bench/policy.py, handed to it as JSON (`peer_mutations`), so that it does the work the policy and
Kyverno do. build.sh builds it once from its Go module, cached outside the repository.
"""

import contextlib
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import requests

from bench.policy import peer_mutations
from certs import CA, CA_FILE, CERT_FILE, KEY_FILE
from tools.harness.processes import free_port, stop_process

BUILD = Path(__file__).resolve().parent / "build.sh"


def build() -> Path:
    """The peer's binary (built once)."""
    done = subprocess.run(["sh", str(BUILD)], stdout=subprocess.PIPE, text=True, check=True)
    return Path(done.stdout.strip())


class Peer:
    """A running peer: its process (for CPU and memory figures), its URL and the CA it is served with."""

    def __init__(self, process: subprocess.Popen, url: str, ca_file: Path) -> None:
        self.process = process
        self.url = url
        self.ca_file = ca_file


@contextlib.contextmanager
def running(workdir: Path, timeout: float = 30) -> Iterator[Peer]:
    """The peer serving https://127.0.0.1:<port>/mutate until the block ends."""
    binary = build()
    home = Path(workdir) / "controller-runtime"
    certs = home / "certs"
    certs.mkdir(parents=True, exist_ok=True)
    ca = CA.create("controller-runtime peer CA")
    serving = ca.issue("localhost", "127.0.0.1")
    (certs / CA_FILE).write_bytes(ca.cert_pem())
    (certs / CERT_FILE).write_bytes(serving.cert_pem())
    (certs / KEY_FILE).write_bytes(serving.key_pem())
    mutations = home / "mutations.json"
    mutations.write_text(json.dumps(peer_mutations()))
    port = free_port()
    log = home / "peer.log"
    command = [str(binary), f"--port={port}", f"--cert-dir={certs}", f"--mutations={mutations}"]
    with open(log, "wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    peer = Peer(process, f"https://127.0.0.1:{port}", certs / CA_FILE)
    try:
        deadline = time.monotonic() + timeout
        while not ready(peer):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"the controller-runtime peer did not start; its log ends:\n{log.read_text()[-2000:]}"
                )
            time.sleep(0.2)
        yield peer
    finally:
        stop_process(process)


def ready(peer: Peer) -> bool:
    with contextlib.suppress(requests.RequestException):
        return requests.get(f"{peer.url}/readyz", verify=peer.ca_file, timeout=2).ok
    return False
