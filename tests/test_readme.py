"""The offline commands of the README and of the manual (docs/), run exactly as written, in a real
shell, on a machine with no cluster; and the manual built as a site, strictly.

A block is marked by the comment before it: `<!-- offline -->`, or `<!-- offline: expect "TEXT" -->`
when its output must hold TEXT.
"""

import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
MARKED = re.compile(r'<!-- offline(?::\s*expect "(?P<expect>[^"]*)")? -->\n```sh\n(?P<script>.*?)```', re.DOTALL)
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCKS = [(match["script"], match["expect"]) for page in PAGES for match in MARKED.finditer(page.read_text())]

pytestmark = pytest.mark.served  # a real shell, and the commands it starts


def test_the_two_minute_example_is_marked_offline():
    readme = (ROOT / "README.md").read_text()
    scripts = "".join(match["script"] for match in MARKED.finditer(readme))
    assert "podmutate mutate -f examples/pods/sync.yaml" in scripts
    assert "--explain" in scripts
    assert "podmutate test examples/tests" in scripts


@pytest.mark.parametrize(("script", "expect"), BLOCKS, ids=[script.splitlines()[0][:50] for script, _ in BLOCKS])
def test_offline_block_runs_as_written(script, expect, tmp_path):
    environ = {
        "PATH": f"{pathlib.Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(tmp_path),  # no ~/.kube/config
        "KUBECONFIG": str(tmp_path / "no-cluster"),
        "LANG": "C.UTF-8",
    }
    result = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", script],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout.strip()
    if expect:
        assert expect in result.stdout


def test_the_manual_builds_strictly(tmp_path):
    """mkdocs.yml's strict mode: a broken link, anchor or a page left out of the navigation fails."""
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "site" / "operate" / "index.html").exists()
