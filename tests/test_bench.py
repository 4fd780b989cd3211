"""The benchmark harness in its quick mode: it runs end to end and writes its report.

No figure is asserted: timings belong to benchmarks, not tests.
"""

import shutil
import subprocess
import sys

import pytest

from tools.harness.controlplane import HOW_TO_GET, find_binaries

pytestmark = pytest.mark.e2e


def test_quick_mode_writes_every_section(tmp_path):
    if shutil.which("wrk") is None:
        pytest.fail("wrk is not installed (.ci/run installs it)")
    if find_binaries() is None:
        pytest.skip(HOW_TO_GET)
    output = tmp_path / "BENCHMARKS.md"
    result = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = output.read_text()
    for heading in (
        "## In-process",
        "## Cost growth",
        "## Served over HTTPS",
        "## Through a real API server",
        "## Under concurrent load, through a real API server",
        "## Memory",
    ):
        assert heading in report
    assert "| kopf full |" in report and "| policy | create |" in report
    assert "| podmutate | 2 |" in report and "p99 podmutate ÷ none" in report
    assert "Command: `python -m bench.run --quick`" in report
