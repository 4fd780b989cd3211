"""podmutate: a mutating admission webhook that makes data-sync job pods right at admission time.

What a plugin author imports is here (docs/plugins.md documents each name):

- ``hookimpl``, to mark hook implementations (the hooks: ``webhook.hookspecs``);
- ``Config``, ``AdmissionRequest``, what hooks are given; ``ConfigError`` and ``Denied``, what they raise;
- ``pods``, helpers that edit a pod dict without duplicating anything;
- ``formats``, checks of Kubernetes values for ``parse_config``;
- ``contract``, the job-pod contract: labels, annotations, paths and container names.

The admission path is ``app`` → ``admission`` → plugins → ``patch``, served by ``server``;
``engine`` and ``config`` load what it runs with. The operator's tools live in ``webhook.ops``.
"""

__version__ = "0.1.0"

from webhook import contract, formats, pods  # noqa: E402
from webhook.config import Config  # noqa: E402
from webhook.errors import ConfigError, Denied  # noqa: E402
from webhook.hookspecs import hookimpl  # noqa: E402
from webhook.wire import AdmissionRequest  # noqa: E402

__all__ = [
    "AdmissionRequest",
    "Config",
    "ConfigError",
    "Denied",
    "contract",
    "formats",
    "hookimpl",
    "pods",
    "__version__",
]
