"""Share podmutate's own certificates between replicas through one Kubernetes Secret.

Every replica keeps the files in its certificate directory; the Secret is where they agree.
The first replica to create the Secret wins; the others take its certificates.
"""

import base64
import logging
import os

import kubernetes
from kubernetes.client.exceptions import ApiException

from certs import CA_FILE, CA_KEY_FILE, CERT_FILE, KEY_FILE, read_bytes, write_atomically

log = logging.getLogger(__name__)

FILES = (CA_FILE, CA_KEY_FILE, CERT_FILE, KEY_FILE)
PRIVATE = (CA_KEY_FILE, KEY_FILE)


class SecretStore:
    """The Secret `name` in `namespace` holding ca.crt, ca.key, tls.crt and tls.key."""

    def __init__(self, client, namespace, name):
        self.api = kubernetes.client.CoreV1Api(client)
        self.namespace = namespace
        self.name = name

    def read(self):
        """The Secret's files as {name: bytes} and its resourceVersion; ({}, None) when absent."""
        try:
            secret = self.api.read_namespaced_secret(self.name, self.namespace)
        except ApiException as error:
            if error.status == 404:
                return {}, None
            raise
        files = {name: base64.b64decode(value) for name, value in (secret.data or {}).items() if name in FILES}
        return files, secret.metadata.resource_version

    def pull(self, directory):
        """Write the Secret's files into `directory` where they differ; True when it held all four."""
        files, _ = self.read()
        if set(files) != set(FILES):
            return False
        for name, data in files.items():
            path = os.path.join(directory, name)
            if read_bytes(path) != data:
                write_atomically(path, data, mode=0o600 if name in PRIVATE else 0o644)
        return True

    def push(self, directory):
        """Store the directory's files in the Secret; False when another replica changed it first."""
        files = {name: read_bytes(os.path.join(directory, name)) for name in FILES}
        current, version = self.read()
        if current == files:
            return True
        body = {
            "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": self.name, "namespace": self.namespace, "resourceVersion": version,
                         "labels": {"app.kubernetes.io/name": "podmutate"}},
            "data": {name: base64.b64encode(data).decode() for name, data in files.items()},
        }
        try:
            if version is None:
                del body["metadata"]["resourceVersion"]
                self.api.create_namespaced_secret(self.namespace, body)
            else:
                self.api.replace_namespaced_secret(self.name, self.namespace, body)
        except ApiException as error:
            if error.status == 409:  # another replica got there first: its certificates win
                return False
            raise
        log.info("certificates stored in Secret %s/%s", self.namespace, self.name)
        return True
