"""The small family of errors podmutate raises, each mapped to what the caller sees."""

from typing import Any


class ConfigError(ValueError):
    """A configuration value is wrong: names the key, the bad value and what is expected."""

    def __init__(self, key: str, value: object, expected: str) -> None:
        self.key = key
        self.value = value
        self.expected = expected
        super().__init__(f"{key}: {value!r} is not valid: expected {expected}")


class ReviewError(ValueError):
    """The request body is not an AdmissionReview podmutate can answer (HTTP 400)."""


class Denied(Exception):
    """Raised by a plugin to refuse a pod; the message is shown to whoever created it.

    The host notes which plugin denied, and how far the mutation had got (`plugin`, `mutation`).
    """

    plugin: str = ""
    mutation: Any = None
