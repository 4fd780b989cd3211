"""Keep the caBundle of a MutatingWebhookConfiguration in step with the CA bundle on disk."""

import base64
import logging
from collections.abc import Callable

import kubernetes

log = logging.getLogger(__name__)


def inject_ca_bundle(client: kubernetes.client.ApiClient, webhook_config: str, bundle: bytes) -> list[str]:
    """Set `bundle` (PEM bytes) as the caBundle of every webhook of `webhook_config`.

    Idempotent: returns the names of the webhooks it changed ([] when all were in step).
    The patch tests each webhook's name, so a concurrent edit of the list fails it cleanly.
    """
    api = kubernetes.client.AdmissionregistrationV1Api(client)
    configuration = api.read_mutating_webhook_configuration(webhook_config)
    encoded = base64.b64encode(bundle).decode()
    operations, changed = [], []
    for index, webhook in enumerate(configuration.webhooks or []):
        if webhook.client_config.ca_bundle == encoded:
            continue
        operations.append({"op": "test", "path": f"/webhooks/{index}/name", "value": webhook.name})
        operations.append({"op": "add", "path": f"/webhooks/{index}/clientConfig/caBundle", "value": encoded})
        changed.append(webhook.name)
    if operations:
        api.patch_mutating_webhook_configuration(webhook_config, operations)
    return changed


def publisher(client: kubernetes.client.ApiClient, webhook_config: str) -> Callable[[bytes], None]:
    """`publish(bundle)`: inject `bundle` into `webhook_config`, logging which webhooks changed."""

    def publish(bundle: bytes) -> None:
        changed = inject_ca_bundle(client, webhook_config, bundle)
        if changed:
            log.info("caBundle of %s updated for %s", webhook_config, ", ".join(changed))

    return publish
