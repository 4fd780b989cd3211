"""Value checks for plugins' parse_config (webhook.formats): one ConfigError naming the key and what is expected.

Whether each check agrees with the API server itself is tested on a real one in
tests/e2e/test_formats_e2e.py.
"""

from decimal import Decimal

import pytest

from webhook import formats
from webhook.errors import ConfigError


def test_label_keys_and_values():
    assert formats.qualified_name_problem("example.com/team") is None
    assert "prefix" in formats.qualified_name_problem("Example.com/team")
    assert "name" in formats.qualified_name_problem("team-")
    assert formats.label_value_problem("") is None
    assert "63" in formats.label_value_problem("x" * 64)
    assert formats.check_labels("k", {"a.io/b": "c"}) == {"a.io/b": "c"}
    with pytest.raises(ConfigError, match=r"k\.a\.io/b: 'c d' is not valid"):
        formats.check_labels("k", {"a.io/b": "c d"})


def test_annotations_and_string_maps():
    assert formats.check_annotations("a", {"a.io/b": "any text at all"}) == {"a.io/b": "any text at all"}
    with pytest.raises(ConfigError, match="a: 'bad key' is not valid"):
        formats.check_annotations("a", {"bad key": "x"})
    with pytest.raises(ConfigError, match="quote numbers and booleans"):
        formats.check_string_map("env", {"PORT": 8080})
    with pytest.raises(ConfigError, match="a mapping of strings to strings"):
        formats.check_string_map("env", ["PORT"])


def test_quantities_and_resources():
    assert formats.check_quantity("q", "500m") == "500m" and formats.check_quantity("q", 2) == "2"
    assert formats.quantity("1Gi") == Decimal(1024**3) and formats.quantity("250m") == Decimal("0.25")
    for bad in ("lots", -1, True, None, "NaN", "Infinity", "1e3Gi", float("nan"), float("inf"), "1\n", "x" * 10**6):
        with pytest.raises(ConfigError, match="q: "):
            formats.check_quantity("q", bad)
    assert formats.check_resources("r", {"requests": {"cpu": 1}, "limits": None}) == {"requests": {"cpu": "1"}}
    with pytest.raises(ConfigError, match="r.limits: .* a mapping with cpu and/or memory"):
        formats.check_resources("r", {"limits": {"gpu": 1}})


def test_names():
    assert formats.check_env_name("e", "JAVA_OPTS") == "JAVA_OPTS"
    with pytest.raises(ConfigError, match="an environment variable name"):
        formats.check_env_name("e", "1=2")
    assert formats.check_object_name("s", "regcred") == "regcred"
    with pytest.raises(ConfigError, match="lower-case DNS subdomain"):
        formats.check_object_name("s", "RegCred")


def test_tolerations_in_api_form():
    assert formats.check_toleration(
        "t", {"key": "pool", "operator": "Equals", "value": "jobs", "effect": "NoSchedule"}
    ) == {"key": "pool", "operator": "Equal", "value": "jobs", "effect": "NoSchedule"}
    assert formats.check_toleration("t", {"operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30}) == {
        "operator": "Exists",
        "effect": "NoExecute",
        "tolerationSeconds": 30,
    }
    with pytest.raises(ConfigError, match="t.value: 'x' is not valid: expected no value with operator Exists"):
        formats.check_toleration("t", {"key": "k", "operator": "Exists", "value": "x", "effect": "NoSchedule"})
    with pytest.raises(ConfigError, match="t.tolerationSeconds"):
        formats.check_toleration("t", {"key": "k", "effect": "NoSchedule", "tolerationSeconds": 5})


def test_sections_flags_and_images():
    assert formats.check_keys("s", {"a": 1}, ("a", "b")) == {"a": 1}
    with pytest.raises(ConfigError, match=r"s.c: 3 is not valid: expected one of the keys a, b"):
        formats.check_keys("s", {"a": 1, "c": 3}, ("b", "a"))
    with pytest.raises(ConfigError, match=r"s: 5 is not valid: expected a mapping of a"):
        formats.check_keys("s", 5, ("a",))
    assert formats.check_flag("f", False) is False
    with pytest.raises(ConfigError, match="f: 'yes' is not valid: expected true or false"):
        formats.check_flag("f", "yes")
    assert formats.check_image("i", "busybox:1.35") == "busybox:1.35"
    with pytest.raises(ConfigError, match="an image reference"):
        formats.check_image("i", " ")
