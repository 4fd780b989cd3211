"""Log lines: text for people (the default), JSON for log pipelines; one setup for the CLI and the workers."""

import logging

from pythonjsonlogger.json import JsonFormatter

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(message)s"
JSON_NAMES = {"asctime": "time", "levelname": "level", "name": "logger"}


def configure(level: str, log_format: str = "text") -> None:
    """Send every log line to standard error, as `log_format` says; replaces earlier settings."""
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JsonFormatter(JSON_FIELDS, rename_fields=JSON_NAMES))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def fields_text(fields: dict) -> str:
    """`key=value` pairs, for the text format's message; JSON carries the same fields as its own keys."""
    return " ".join(f"{key}={value}" for key, value in fields.items() if value not in (None, "", []))
