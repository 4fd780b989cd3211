"""The small family of errors podmutate raises, each mapped to what the caller sees."""

from typing import Any

MAX_SHOWN = 200  # characters of a bad value or key an error shows: one line, whatever was written


def clipped(text: str, limit: int = MAX_SHOWN) -> str:
    """`text` on one line of at most `limit` characters."""
    text = text.replace("\r", "\\r").replace("\n", "\\n")
    return text if len(text) <= limit else f"{text[: limit - 5]}...{text[-2:]}"


def shown(value: object) -> str:
    """`repr(value)`, clipped."""
    try:
        return clipped(repr(value))
    except Exception:  # a value whose repr raises, or nested too deep to print
        return f"<{type(value).__name__}>"


class ConfigError(ValueError):
    """A configuration value is wrong: names the key, the bad value and what is expected, on one
    line of bounded length."""

    def __init__(self, key: str, value: object, expected: str) -> None:
        self.key = key
        self.value = value
        self.expected = expected
        super().__init__(f"{clipped(str(key))}: {shown(value)} is not valid: expected {expected}")


class ReviewError(ValueError):
    """The request body is not an AdmissionReview podmutate can answer (HTTP 400)."""


class Denied(Exception):
    """Raised by a plugin to refuse a pod; the message is shown to whoever created it.

    The host notes which plugin denied, and how far the mutation had got (`plugin`, `mutation`).
    """

    plugin: str = ""
    mutation: Any = None


def problem_payload(code: int, title: str, detail: str) -> dict:
    """The JSON body of an HTTP error: its code, title and what was wrong."""
    return {"code": code, "error": title, "message": detail}


def too_large(cap: int, declared: int | None = None) -> str:
    """Why a body gets 413: its declared size when the request says it, else that it ran past `cap`.
    The one wording, for the app's check and the server's (which refuses before the app runs)."""
    if declared is not None:
        return f"the body has {declared} bytes; the limit is {cap}"
    return f"the body is longer than the limit of {cap} bytes"
