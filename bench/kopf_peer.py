"""The Python peer: podmutate's mutations as a kopf admission handler, on kopf's webhook server.

Run by the benchmark as `kopf run bench/kopf_peer.py --standalone` with PODMUTATE_BENCH_PORT
and PODMUTATE_BENCH_CERTS set. The handler applies podmutate's own plugins and hands the result
to kopf's patch object, so both servers do the same mutation and only the stacks differ.
"""

import os

import kopf

from webhook import admission
from webhook.engine import load_engine
from webhook.patch import copy

ENGINE = load_engine(environ={})


@kopf.on.startup()
def configure(settings, **_):
    certs = os.environ["PODMUTATE_BENCH_CERTS"]
    settings.admission.server = kopf.WebhookServer(
        addr="127.0.0.1",
        port=int(os.environ["PODMUTATE_BENCH_PORT"]),
        certfile=os.path.join(certs, "tls.crt"),
        pkeyfile=os.path.join(certs, "tls.key"),
    )
    settings.admission.managed = None
    settings.posting.enabled = False


@kopf.on.mutate("v1", "pods", id="podmutate", operation="CREATE")
async def mutate(body, patch, **_):
    pod = copy(dict(body))
    mutation = admission.mutate(pod, ENGINE)
    for section in ("metadata", "spec"):
        for key, value in mutation.pod.get(section, {}).items():
            if pod[section].get(key) != value:
                patch.setdefault(section, {})[key] = value
