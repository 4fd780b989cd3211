"""podmutate: a mutating admission webhook that makes data-sync job pods right at admission time."""

from webhook.errors import ConfigError, Denied
from webhook.hookspecs import hookimpl

__version__ = "0.1.0"

__all__ = ["ConfigError", "Denied", "hookimpl", "__version__"]
