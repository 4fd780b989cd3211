"""The layers of the house point one way: a module imports only from its own layer or below.

The layers, lowest first, are drawn in docs/architecture.md. Every import counts — at the top of
a module, inside a function, or for type checking only. BACK_IMPORTS would list an import that
runs back up with what would take it out; the test fails on any other, and on an entry that no
longer happens (so the list only shrinks). It is empty.
"""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent

# Lowest first. A module belongs to the first layer with a prefix of its name.
LAYERS = [
    ("foundation", ["webhook.errors", "webhook.files", "webhook.contract", "webhook.logs"]),
    ("values", ["webhook.formats", "webhook.wire", "webhook.patch", "webhook.pods", "webhook.budget"]),
    ("certificates", ["certs"]),
    ("host API", ["webhook.config", "webhook.hookspecs", "webhook.validity", "webhook"]),
    ("plugins", ["plugins"]),
    ("core", ["webhook.plugins", "webhook.engine", "webhook.admission", "webhook.deadline", "webhook.watch"]),
    ("observability", ["webhook.metrics"]),
    ("serving and operations", ["webhook.app", "webhook.server", "webhook.tls", "webhook.ops"]),
    ("command line", ["webhook.cli", "webhook.__main__"]),
]
PACKAGES = ("webhook", "plugins", "certs")

# (importer, imported): still back up, and why.
BACK_IMPORTS: dict[tuple[str, str], str] = {}


def layer_of(module):
    for rank, (_name, prefixes) in enumerate(LAYERS):
        if any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes):
            return rank
    raise AssertionError(f"{module} is in no layer: add it to LAYERS and to docs/architecture.md")


def module_name(path):
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path):
    """Every module of the project's packages that `path` imports."""
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
            # `from webhook import pods` imports the module webhook.pods
            names += [
                f"{node.module}.{alias.name}"
                for alias in node.names
                if (ROOT / node.module.replace(".", "/") / f"{alias.name}.py").exists()
                or (ROOT / node.module.replace(".", "/") / alias.name / "__init__.py").exists()
            ]
            if len(names) > 1:
                names = names[1:]
        else:
            continue
        found.update(name for name in names if name.split(".")[0] in PACKAGES)
    return found


def sources():
    for package in PACKAGES:
        yield from sorted((ROOT / package).rglob("*.py"))


def back_imports():
    found = set()
    for path in sources():
        importer = module_name(path)
        for imported in imports(path):
            if layer_of(imported) > layer_of(importer):
                found.add((importer, imported))
    return found


def test_no_import_runs_back_up():
    unexpected = sorted(back_imports() - set(BACK_IMPORTS))
    assert not unexpected, "imports from a higher layer: " + ", ".join(f"{a} -> {b}" for a, b in unexpected)


def test_the_list_of_back_imports_only_shrinks():
    gone = sorted(set(BACK_IMPORTS) - back_imports())
    assert not gone, f"no longer back up, take them off BACK_IMPORTS: {gone}"


# Who may import whom among the trees around the packages: tests/ and bench/ both stand on the
# shared harness (tools/harness: the control plane, `podmutate serve`, the inputs), and never on
# each other; the harness and the node tooling stand on neither.
FORBIDDEN = {"bench": {"tests"}, "tests": {"bench"}, "tools": {"tests", "bench"}}


def imported_roots(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module.split(".")[0]


def test_tests_bench_and_the_harness_do_not_import_each_other():
    crossing = sorted(
        {
            f"{path.relative_to(ROOT)} imports {root}"
            for importer, forbidden in FORBIDDEN.items()
            for path in (ROOT / importer).rglob("*.py")
            for root in imported_roots(path)
            if root in forbidden
        }
    )
    assert not crossing, crossing


def test_the_crossing_check_sees_an_import_it_forbids(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from tests.helpers import job_pod\n")
    assert "tests" in set(imported_roots(probe))
