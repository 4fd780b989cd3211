"""Kubernetes value formats (label keys and values, quantities, names, tolerations) podmutate checks
before it writes them: a patch must never be refused. For plugins' `parse_config`; each raises ConfigError."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from webhook.errors import ConfigError

# The helpers plugins may use, each documented in docs/plugins.md.
__all__ = [
    "check_keys",
    "check_flag",
    "check_image",
    "label_value_problem",
    "qualified_name_problem",
    "check_labels",
    "check_annotations",
    "check_string_map",
    "check_quantity",
    "check_resources",
    "quantity",
    "check_env_name",
    "check_object_name",
    "check_toleration",
]

_NAME = r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_LABEL_VALUE = re.compile(rf"^({_NAME})?$")
_QUALIFIED_NAME = re.compile(rf"^{_NAME}$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
# apimachinery's resource.Quantity: a signed decimal number, then a binary-SI suffix, a
# decimal-SI suffix or a decimal exponent. Nothing else: no NaN, no Infinity, no "1e3Gi", no
# Unicode digits, no spaces (check_quantity trims those around it, as the API server does).
_QUANTITY = re.compile(
    r"(?P<number>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(?P<suffix>[KMGTPE]i|[numkMGTPE]|[eE][+-]?[0-9]+)?"
)
_BINARY_SI = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_DECIMAL_SI = {"n": -9, "u": -6, "m": -3, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
# A decimal exponent beyond nano to exa is refused: the API server accepts up to an int32 but
# takes seconds (past its timeout, for 1e2147483648) to canonicalise such a number.
_EXPONENT_LIMIT = 18
MAX_QUANTITY_CHARACTERS = 64  # a quantity is a few characters; a longer string is not one to compute with

PULL_POLICIES = ("Always", "IfNotPresent", "Never")
RESOURCE_KINDS = ("requests", "limits")
RESOURCE_NAMES = ("cpu", "memory")
TOLERATION_OPERATORS = ("Exists", "Equal")
TOLERATION_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


def check_keys(key: str, section: Any, allowed: Iterable[str]) -> dict[str, Any]:
    """Return `section` when it is a mapping whose keys are all `allowed`; else raise ConfigError
    naming the first other key (a typo in a section must not pass as "not set")."""
    allowed = sorted(allowed)
    if not isinstance(section, dict):
        raise ConfigError(key, section, f"a mapping of {', '.join(allowed)}")
    unknown = sorted(set(section) - set(allowed), key=str)
    if unknown:
        raise ConfigError(f"{key}.{unknown[0]}", section[unknown[0]], f"one of the keys {', '.join(allowed)}")
    return section


def check_flag(key: str, value: Any) -> bool:
    """Return `value` when it is true or false (not a string or a number), else raise ConfigError."""
    if not isinstance(value, bool):
        raise ConfigError(key, value, "true or false")
    return value


def check_image(key: str, value: Any) -> str:
    """Return `value` when it is an image reference (a non-blank string), else raise ConfigError."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(key, value, "an image reference such as busybox:1.35")
    return value


def label_value_problem(value: Any) -> str | None:
    """Why `value` is not a valid label value, or None when it is."""
    if not isinstance(value, str):
        return "a label value must be a string"
    if len(value) > 63:
        return f"a label value must be at most 63 characters, this one has {len(value)}"
    if not _LABEL_VALUE.match(value):
        return "a label value must be alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric"
    return None


def qualified_name_problem(key: Any) -> str | None:
    """Why `key` is not a valid label or annotation key ([prefix/]name), or None."""
    if not isinstance(key, str) or not key:
        return "a key must be a non-empty string"
    prefix, slash, name = key.rpartition("/")
    if slash and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        return "a key's prefix must be a DNS subdomain (lower case, at most 253 characters)"
    if len(name) > 63 or not _QUALIFIED_NAME.match(name):
        return "a key's name must be 1-63 alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric"
    return None


def check_labels(key: str, labels: Any) -> dict[str, str]:
    """Check a mapping of label keys to values; raise ConfigError naming `key` and the entry."""
    check_string_map(key, labels)
    for name, value in labels.items():
        problem = qualified_name_problem(name) or label_value_problem(value)
        if problem:
            raise ConfigError(f"{key}.{name}", value, problem.replace("must be", "that is"))
    return labels


def check_annotations(key: str, annotations: Any) -> dict[str, str]:
    """Check a mapping of annotation keys to string values; raise ConfigError naming `key` and the entry."""
    check_string_map(key, annotations)
    for name in annotations:
        problem = qualified_name_problem(name)
        if problem:
            raise ConfigError(key, name, problem.replace("must be", "that is"))
    return annotations


def check_string_map(key: str, mapping: Any) -> dict[str, str]:
    """Check a mapping of strings to strings (a YAML number or boolean is refused); raise ConfigError."""
    if not isinstance(mapping, dict):
        raise ConfigError(key, mapping, "a mapping of strings to strings")
    for name, value in mapping.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise ConfigError(f"{key}.{name}", value, "a string (quote numbers and booleans in YAML)")
    return mapping


def check_quantity(key: str, value: Any) -> str:
    """Return `value` as a canonical quantity string, or raise ConfigError."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ConfigError(key, value, "a Kubernetes quantity such as 500m, 2 or 1Gi")
    text = str(value).strip(" ")  # the API server trims spaces around a quantity, and stores it without
    try:
        amount = quantity(text)
    except ValueError:
        raise ConfigError(key, value, "a Kubernetes quantity such as 500m, 2 or 1Gi") from None
    if amount < 0:
        raise ConfigError(key, value, "a quantity that is not negative")
    return text


def check_resources(key: str, raw: Any) -> dict[str, dict[str, str]]:
    """Check {requests: {cpu, memory}, limits: {cpu, memory}}; return it with quantities as strings."""
    if not isinstance(raw, dict) or set(raw) - set(RESOURCE_KINDS):
        raise ConfigError(key, raw, "a mapping with requests and/or limits")
    checked = {}
    for kind, values in raw.items():
        if values is None:
            continue
        if not isinstance(values, dict) or set(values) - set(RESOURCE_NAMES):
            raise ConfigError(f"{key}.{kind}", values, "a mapping with cpu and/or memory")
        checked[kind] = {
            name: check_quantity(f"{key}.{kind}.{name}", value) for name, value in values.items() if value is not None
        }
    return checked


@functools.lru_cache(maxsize=4096)  # pods repeat the same few quantities; parsing them is not free
def quantity(value: str) -> Decimal:
    """The Decimal amount of a quantity string, in Kubernetes' grammar exactly (for comparing
    requests with limits); raises ValueError for anything else."""
    if not isinstance(value, str) or len(value) > MAX_QUANTITY_CHARACTERS:
        raise ValueError(f"not a Kubernetes quantity: {value!r}")
    return _quantity(value)


@functools.lru_cache(maxsize=4096)  # a review reads the same few quantities again and again
def _quantity(value: str) -> Decimal:
    match = _QUANTITY.fullmatch(value)
    if match is None:
        raise ValueError(f"not a Kubernetes quantity: {value!r}")
    number, suffix = match["number"], match["suffix"] or ""
    if suffix in _BINARY_SI:
        return Decimal(number) * (2 ** _BINARY_SI[suffix])
    exponent = _DECIMAL_SI[suffix] if suffix in _DECIMAL_SI else int(suffix[1:] or 0)
    if not -_EXPONENT_LIMIT <= exponent <= _EXPONENT_LIMIT:
        raise ValueError(f"the exponent of {value!r} is out of range")
    return Decimal(f"{number}e{exponent}")


def check_env_name(key: str, name: Any) -> str:
    """Return `name` when it is a valid environment variable name, else raise ConfigError."""
    if not isinstance(name, str) or not _ENV_NAME.match(name):
        raise ConfigError(key, name, "an environment variable name (letters, digits, '_', '-', '.')")
    return name


def check_object_name(key: str, name: Any) -> str:
    """Return `name` when it is a valid object name (a lower-case DNS subdomain), else raise ConfigError."""
    if not isinstance(name, str) or len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
        raise ConfigError(key, name, "an object name (lower-case DNS subdomain)")
    return name


def check_toleration(key: str, toleration: Any) -> dict[str, Any]:
    """Return a toleration in API form, or raise ConfigError for one the API server would refuse."""
    if not isinstance(toleration, dict):
        raise ConfigError(key, toleration, "a toleration mapping with key, operator and effect")
    allowed = {"key", "operator", "value", "effect", "tolerationSeconds"}
    unknown = sorted(set(toleration) - allowed)
    if unknown:
        raise ConfigError(f"{key}.{unknown[0]}", toleration[unknown[0]], f"one of the fields {sorted(allowed)}")
    result = {}
    if toleration.get("key"):
        problem = qualified_name_problem(toleration["key"])
        if problem:
            raise ConfigError(f"{key}.key", toleration["key"], problem.replace("must be", "that is"))
        result["key"] = toleration["key"]
    operator = toleration.get("operator", "Equal")
    if operator == "Equals":  # Airbyte's documented example spells it so; the API wants Equal
        operator = "Equal"
    if operator not in TOLERATION_OPERATORS:
        raise ConfigError(f"{key}.operator", operator, " or ".join(TOLERATION_OPERATORS))
    result["operator"] = operator
    value = toleration.get("value")
    if value is not None:
        if operator == "Exists":
            raise ConfigError(f"{key}.value", value, "no value with operator Exists")
        problem = label_value_problem(value)
        if problem:
            raise ConfigError(f"{key}.value", value, problem.replace("must be", "that is"))
        result["value"] = value
    elif "key" not in result and operator != "Exists":
        raise ConfigError(f"{key}.operator", operator, "Exists when the toleration has no key")
    effect = toleration.get("effect")
    if effect not in TOLERATION_EFFECTS:
        raise ConfigError(f"{key}.effect", effect, " or ".join(TOLERATION_EFFECTS))
    result["effect"] = effect
    seconds = toleration.get("tolerationSeconds")
    if seconds is not None:
        if effect != "NoExecute" or isinstance(seconds, bool) or not isinstance(seconds, int):
            raise ConfigError(f"{key}.tolerationSeconds", seconds, "whole seconds, with effect NoExecute only")
        result["tolerationSeconds"] = seconds
    return result
