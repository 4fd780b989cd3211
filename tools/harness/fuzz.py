"""Fuzzing the webhook: every AdmissionReview with a uid gets a well-formed answer, never a 5xx.

Reviews are made from real-shaped job pods by seeded random damage: a value anywhere replaced
by one of another JSON type, a member deleted or added, a list emptied. Each answer is checked:
a status of 200, 400 or 413 and never 5xx; a 200 is an AdmissionReview whose response echoes
the uid, says `allowed`, and whose patch, if any, applies to the object with jsonpatch.

    .venv/bin/python -m tools.harness.fuzz                   # 100,000 in process, 10,000 over HTTPS
    .venv/bin/python -m tools.harness.fuzz --quick           # a few thousand: what the tests run
"""

import argparse
import base64
import copy
import json
import random
import tempfile
from collections import Counter
from pathlib import Path

import jsonpatch
import orjson
import requests

from tools.harness.pods import airbyte_pod, review

SEED = 20261126
JOB_TYPES = ("spec", "check", "discover", "sync", "orchestrator")
ODD_VALUES = (None, True, 0, -1, 2**63, 1.5, "", "x" * 300, "/tmp", [], [None], {}, {"": None}, ["a", {"b": []}])


def seeds():
    """Job pods of every type, plain and with the annotations that switch plugins on."""
    pods = [airbyte_pod(job_type, containers=count) for job_type in JOB_TYPES for count in (1, 5)]
    annotated = airbyte_pod("sync")
    annotated["metadata"]["annotations"].update(
        {"podmutate.io/fix-permissions": "secret-0,secret-1", "podmutate.io/uses-stdin": "true"}
    )
    annotated["spec"]["securityContext"] = {"runAsUser": 1000, "runAsGroup": 1000}
    return [*pods, annotated]


def paths(node, prefix=()):
    """Every path into a JSON document, as tuples of keys and indexes."""
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from paths(value, (*prefix, index))


def damage(document, rng):
    """One random change somewhere in `document` (in place)."""
    path = rng.choice(list(paths(document)))
    if not path:
        return
    parent = document
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    action = rng.random()
    if action < 0.6:
        parent[last] = copy.deepcopy(rng.choice(ODD_VALUES))
    elif action < 0.8 and isinstance(parent, dict):
        del parent[last]
    elif isinstance(parent, dict):
        parent[rng.choice(["labels", "annotations", "spec", "name", "podmutate.io/job-type", "x"])] = copy.deepcopy(
            rng.choice(ODD_VALUES)
        )
    else:
        parent.clear()


def fuzzed_reviews(count, seed=SEED):
    """`count` damaged AdmissionReviews, each with a request uid (the contract is about those)."""
    rng = random.Random(seed)
    bases = [review(pod) for pod in seeds()]
    for number in range(count):
        body = copy.deepcopy(rng.choice(bases))
        for _ in range(rng.randint(1, 4)):
            damage(body, rng)
        if isinstance(body.get("request"), dict):
            body["request"]["uid"] = f"fuzz-{number}"
        yield body


def check_answer(body, status, payload):
    """Why an answer breaks the contract, or None when it keeps it."""
    if status >= 500:
        return f"HTTP {status}"
    if status in (400, 413):
        return None if isinstance(payload, dict) and payload.get("message") else f"HTTP {status} without a message"
    if status != 200:
        return f"HTTP {status}"
    response = payload.get("response") if isinstance(payload, dict) else None
    if payload.get("kind") != "AdmissionReview" or not isinstance(response, dict):
        return "not an AdmissionReview"
    if response.get("uid") != body["request"]["uid"] or not isinstance(response.get("allowed"), bool):
        return "uid not echoed, or no allowed"
    if "patch" in response:
        try:
            jsonpatch.apply_patch(body["request"]["object"], json.loads(base64.b64decode(response["patch"])))
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, ValueError, TypeError) as error:
            return f"the patch does not apply: {error}"
    return None


def in_process(count):
    """Through the Flask app itself (view and core), without a network."""
    from webhook.app import create_app

    client = create_app().test_client()
    statuses, broken = Counter(), []
    for body in fuzzed_reviews(count):
        answer = client.post("/mutate", data=orjson.dumps(body), content_type="application/json")
        statuses[answer.status_code] += 1
        problem = check_answer(body, answer.status_code, answer.get_json(silent=True) or {})
        if problem:
            broken.append(problem)
    return statuses, broken


def over_https(count, served):
    """Through `podmutate serve`, over verified TLS."""
    statuses, broken = Counter(), []
    session = requests.Session()
    for body in fuzzed_reviews(count, seed=SEED + 1):
        answer = session.post(
            f"{served.url}/mutate",
            data=orjson.dumps(body),
            verify=served.ca_file,
            timeout=10,
            headers={"Content-Type": "application/json"},
        )
        statuses[answer.status_code] += 1
        try:
            payload = answer.json()
        except ValueError:
            payload = {}
        problem = check_answer(body, answer.status_code, payload)
        if problem:
            broken.append(problem)
    return statuses, broken


def run(in_process_count, https_count):
    """Both fuzzers; returns {where: (statuses, broken)}."""
    from tools.harness.processes import serve

    results = {"in process": in_process(in_process_count)}
    with tempfile.TemporaryDirectory() as workdir, serve(Path(workdir), workers=2) as served:
        results["over HTTPS"] = over_https(https_count, served)
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    counts = (3000, 300) if args.quick else (100_000, 10_000)
    for where, (statuses, broken) in run(*counts).items():
        print(
            f"{where}: {sum(statuses.values())} reviews, statuses {dict(sorted(statuses.items()))}, "
            f"{len(broken)} broken" + (f": {Counter(broken).most_common(3)}" if broken else "")
        )


if __name__ == "__main__":
    main()
