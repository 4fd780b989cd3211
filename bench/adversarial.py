"""The adversarial suite, long: generated hostile pods against a served podmutate in a memory cgroup
at the manifests' limit, and generated hostile configuration files and environment values loaded.

Every pod review must be answered well-formed (200 with its uid, or 400/413/429), no worker dead
(one retired at its memory ceiling is replaced gracefully), nothing OOM-killed, /healthz green;
every configuration taken or refused with one short line.

    sudo .venv/bin/python -m bench.adversarial                 # 5,000 pods, 20,000 files, 20,000 values
    sudo .venv/bin/python -m bench.adversarial --pods 200      # the counts are yours
"""

import argparse
import collections
import json
import tempfile
import time
from pathlib import Path

import requests
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tools.harness import hostile
from tools.harness.processes import MemoryCgroup, abnormal_exits, manifest_memory_limit, serve
from webhook import budget
from webhook.engine import load_engine
from webhook.errors import ConfigError

LIMIT_TEXT = 600  # characters of a refusal


def run_pods(count):
    statuses = collections.Counter()
    cgroup = MemoryCgroup(manifest_memory_limit())
    try:
        with serve(Path(tempfile.mkdtemp(prefix="podmutate-adversarial-")), workers=2, cgroup=cgroup) as served:
            # No shrinking: a kill or a lost worker stays lost, and would fail every smaller case too.
            @settings(
                max_examples=count,
                deadline=None,
                database=None,
                phases=[Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(pod=hostile.hostile_pods())
            def review_one(pod):
                body = json.dumps(
                    {
                        "apiVersion": "admission.k8s.io/v1",
                        "kind": "AdmissionReview",
                        "request": {
                            "uid": "u",
                            "kind": {"group": "", "version": "v1", "kind": "Pod"},
                            "resource": {"group": "", "version": "v1", "resource": "pods"},
                            "operation": "CREATE",
                            "object": pod,
                        },
                    }
                ).encode()
                if len(body) > 3 * 1024 * 1024:
                    statuses["over 3 MiB, not sent"] += 1
                    return
                shown = f"a body of {len(body)} bytes, {budget.values_in(body)} values: {body[:300]!r}"
                response = requests.post(served.url + "/mutate", data=body, verify=served.ca_file, timeout=60)
                answer = response.json()
                assert response.status_code in (200, 400, 413, 429), response.text[:300]
                if response.status_code == 200:
                    assert answer["response"]["uid"] == "u" and answer["response"]["allowed"] is True
                    kind = "mutated" if "patch" in answer["response"] else "admitted unmutated"
                    statuses[f"200 {kind}"] += 1
                else:
                    statuses[str(response.status_code)] += 1
                assert cgroup.oom_kills() == 0, f"OOM kill after {shown}"
                assert not abnormal_exits(served.log()), f"a worker died after {shown}"
                assert served.get("/healthz", fresh=True).status_code == 200

            started = time.monotonic()
            review_one()
            seconds = time.monotonic() - started
            peak = cgroup.peak()
            statuses["workers retired at their memory ceiling"] = served.log().count("over the ceiling of")
    finally:
        cgroup.remove()
    return statuses, seconds, peak


def run_configs(count):
    outcomes = collections.Counter()
    directory = Path(tempfile.mkdtemp(prefix="podmutate-adversarial-config-"))

    @settings(max_examples=count, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(text=hostile.hostile_config_files())
    def load_file(text):
        path = directory / "podmutate.yaml"
        path.write_text(text)
        try:
            load_engine(str(path), environ={})
            outcomes["file taken"] += 1
        except ConfigError as error:
            assert "\n" not in str(error) and len(str(error)) < LIMIT_TEXT
            outcomes["file refused in one line"] += 1

    @settings(max_examples=count, deadline=None, database=None)
    @given(
        value=hostile.ODD_TEXT,
        variable=st.sampled_from(
            [
                "JOB_MAIN_CONTAINER_CPU_REQUEST",
                "JOB_KUBE_TOLERATIONS",
                "JOB_KUBE_NODE_SELECTORS",
                "SYNC_JOB_INIT_RETRY_TIMEOUT_MINUTES",
                "JOB_KUBE_MAIN_CONTAINER_IMAGE_PULL_POLICY",
            ]
        ),
    )
    def load_value(variable, value):
        try:
            load_engine(environ={variable: value})
            outcomes["value taken"] += 1
        except ConfigError as error:
            assert "\n" not in str(error) and len(str(error)) < LIMIT_TEXT
            outcomes["value refused in one line"] += 1

    started = time.monotonic()
    load_file()
    load_value()
    return outcomes, time.monotonic() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pods", type=int, default=5000)
    parser.add_argument("--configs", type=int, default=20000)
    options = parser.parse_args()
    statuses, seconds, peak = run_pods(options.pods)
    print(
        f"hostile pods: {sum(statuses.values())} in {seconds:.0f} s, cgroup peak {peak / 2**20:.0f} MiB "
        f"of {manifest_memory_limit() / 2**20:.0f} MiB, 0 OOM kills, 0 workers dead"
    )
    for status, count in sorted(statuses.items()):
        print(f"  {status:28} {count}")
    outcomes, seconds = run_configs(options.configs)
    print(f"hostile configuration: {sum(outcomes.values())} in {seconds:.0f} s")
    for outcome, count in sorted(outcomes.items()):
        print(f"  {outcome:28} {count}")


if __name__ == "__main__":
    main()
