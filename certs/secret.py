"""Share podmutate's own certificates between replicas through one Kubernetes Secret.

Every replica keeps the files in its certificate directory; the Secret is where they agree.
The first replica to create the Secret wins; the others take its certificates. Every change
is made against the resourceVersion last read, so no replica overwrites what another stored.
"""

from __future__ import annotations

import base64
import logging
import os
from dataclasses import dataclass

import kubernetes
from kubernetes.client.exceptions import ApiException

from certs import CA_FILE, CA_KEY_FILE, CERT_FILE, KEY_FILE, read_bytes
from webhook.files import write_atomically

log = logging.getLogger(__name__)

FILES = (CA_FILE, CA_KEY_FILE, CERT_FILE, KEY_FILE)
PRIVATE = (CA_KEY_FILE, KEY_FILE)


class SecretStore:
    """The Secret `name` in `namespace` holding ca.crt, ca.key, tls.crt and tls.key."""

    def __init__(self, client: kubernetes.client.ApiClient, namespace: str, name: str) -> None:
        self.api = kubernetes.client.CoreV1Api(client)
        self.namespace = namespace
        self.name = name

    def read(self) -> tuple[dict[str, bytes], str | None]:
        """The Secret's files as {name: bytes} and its resourceVersion; ({}, None) when absent."""
        try:
            secret = self.api.read_namespaced_secret(self.name, self.namespace)
        except ApiException as error:
            if error.status == 404:
                return {}, None
            raise
        files = {name: base64.b64decode(value) for name, value in (secret.data or {}).items() if name in FILES}
        return files, secret.metadata.resource_version

    def pull(self, directory: str) -> Snapshot:
        """Write the Secret's files into `directory` where they differ.

        Returns what `push` needs to change the Secret safely: a Snapshot of the files and the
        resourceVersion read, so that a Secret another replica wrote since is never overwritten.
        """
        files, version = self.read()
        if set(files) == set(FILES):
            for name, data in files.items():
                path = os.path.join(directory, name)
                if read_bytes(path) != data:
                    write_atomically(path, data, mode=0o600 if name in PRIVATE else 0o644)
        return Snapshot(files, version)

    def push(self, directory: str, seen: Snapshot) -> bool:
        """Store the directory's files, if the Secret is still as `seen`; False when another replica changed it.

        Create-or-adopt: with no Secret seen, only a create is tried, and a 409 means another
        replica created it first; otherwise the replace carries the resourceVersion seen, and the
        API server refuses it (409) when the Secret changed in between. Either way the caller
        pulls again and takes what the other replica stored.
        """
        files = {name: read_bytes(os.path.join(directory, name)) for name in FILES}
        if seen.files == files:
            return True
        metadata = {"name": self.name, "namespace": self.namespace, "labels": {"app.kubernetes.io/name": "podmutate"}}
        if seen.version is not None:
            metadata["resourceVersion"] = seen.version
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/tls",
            "metadata": metadata,
            "data": {name: base64.b64encode(data).decode() for name, data in files.items()},
        }
        try:
            if seen.version is None:
                self.api.create_namespaced_secret(self.namespace, body)
            else:
                self.api.replace_namespaced_secret(self.name, self.namespace, body)
        except ApiException as error:
            if error.status == 409:
                log.info(
                    "Secret %s/%s was written by another replica; taking its certificates", self.namespace, self.name
                )
                return False
            raise
        log.info("certificates stored in Secret %s/%s", self.namespace, self.name)
        return True


@dataclass(frozen=True)
class Snapshot:
    """The Secret's files and resourceVersion as one read saw them; version None when it did not exist."""

    files: dict
    version: str | None
