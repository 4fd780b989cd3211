"""Golden files: tests/golden/<case>/pod.yaml, mutated with the case's config.yaml or env, must
equal expected.yaml (and its warnings, expected-warnings.txt). Run by the same code as `podmutate test`.

Regenerate after a deliberate change with `podmutate test --update tests/golden`, then read the diff.
"""

import pathlib

import pytest
import yaml

from webhook import admission
from webhook.engine import load_engine
from webhook.ops.cases import POD_FILE, find_cases, run_case

GOLDEN = pathlib.Path(__file__).parent / "golden"
CASES = find_cases(GOLDEN)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_golden(case):
    outcome = run_case(case)
    assert outcome.error is None
    assert outcome.differences == []


def test_every_job_type_has_a_golden_case():
    job_types = set()
    engine = load_engine(environ={})
    for case in CASES:
        pod = yaml.safe_load((case / POD_FILE).read_text())
        job_types.add(admission.mutate(pod, engine).job_type)
    assert {"spec", "check", "discover", "sync", "orchestrator"} <= job_types
