"""The fuzzer's quick mode: damaged AdmissionReviews through the app and over verified HTTPS.

The full counts (100,000 and 10,000) run in `python -m bench.run`; see BENCHMARKS.md.
"""

import logging

import pytest

from tools.harness import fuzz


@pytest.mark.served
def test_every_fuzzed_review_gets_a_well_formed_answer_and_never_a_5xx(caplog):
    caplog.set_level(logging.CRITICAL, logger="webhook")  # plugin failures on damaged pods are logged by design
    results = fuzz.run(3000, 300)
    for where, (statuses, broken) in results.items():
        assert broken == [], where
        assert not any(status >= 500 for status in statuses), (where, statuses)
        assert statuses[200] and statuses[400], (where, statuses)  # both kinds of input were reached


def test_the_answer_check_catches_a_broken_answer():
    body = {"request": {"uid": "u", "object": {"metadata": {}}}}
    assert fuzz.check_answer(body, 500, {}) == "HTTP 500"
    assert (
        fuzz.check_answer(body, 200, {"kind": "AdmissionReview", "response": {"uid": "v", "allowed": True}})
        == "uid not echoed, or no allowed"
    )
    assert fuzz.check_answer(
        body,
        200,
        {
            "kind": "AdmissionReview",
            "response": {"uid": "u", "allowed": True, "patch": "W3sib3AiOiAicmVtb3ZlIiwgInBhdGgiOiAiL25vbmUifV0="},
        },
    ).startswith("the patch does not apply")
