"""The README's offline commands, run exactly as written, in a real shell, on a machine with no cluster.

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
BLOCKS = [(match["script"], match["expect"]) for match in MARKED.finditer((ROOT / "README.md").read_text())]


def test_the_two_minute_example_is_marked_offline():
    scripts = "".join(script for script, _ in BLOCKS)
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
