"""Instructions per review, counted by valgrind's callgrind: the admission core against the floor, stage by stage.

A count of instructions does not move with whatever else the machine does — on a shared machine a
wall-clock figure of the same code moved by half between two runs — so the ratios of one path to
another are read here without noise. It is not time (a cache miss costs more than an add), and
the figures of `python -m bench.run` remain the ones in seconds. Each figure is the difference
between a process that runs the stage N times and one that prepares the same and runs it none,
both under callgrind, divided by N; a plugin runs on fresh copies of the pod, and the copies'
own count is taken off.

    python -m bench.instructions               # a 5-container sync review, 200 of each
    python -m bench.instructions --count 500
"""

import argparse
import re
import shutil
import subprocess
import sys

PROBE = """
import sys
import orjson
from tools.harness.pods import airbyte_pod, review
from webhook import admission, patch, validity, wire
from webhook.engine import load_engine

engine = load_engine(environ={})
body = orjson.dumps(review(airbyte_pod("sync", containers=5)))
parsed = orjson.loads(body)
request, original = wire.parse_review(parsed)
mutation = admission.mutate(original, engine)
mutators = dict(engine.mutators)


def floor():
    uid = orjson.loads(body)["request"]["uid"]
    return orjson.dumps({"apiVersion": wire.API_VERSION, "kind": wire.KIND, "response": {"uid": uid, "allowed": True}})


def plugin(name):
    mutate_alone = mutators[name]
    return lambda: mutate_alone(pod=patch.copy(original), job_type="sync", config=engine.config, request=request)


STAGES = {
    "floor": floor,
    "review": lambda: orjson.dumps(admission.review(orjson.loads(body), engine)),
    "parse": lambda: orjson.loads(body),
    "read": lambda: wire.parse_review(parsed),
    "classify": lambda: engine.plugins.hook.classify_pod(pod=original, namespace="jobs", config=engine.config),
    "copy": lambda: patch.copy(original),
    "guard": lambda: validity.problems(mutation.pod),
    "diff": lambda: patch.diff(original, mutation.pod),
    "answer": lambda: wire.encode(wire.response(request.uid, patch=mutation.patch, audit={"patch": "13"})),
    **{f"plugin {name}": plugin(name) for name in mutators},
}
stage, count = sys.argv[1], int(sys.argv[2])
if stage == "list":
    print("\\n".join(STAGES))
    raise SystemExit
for function in STAGES.values():
    function()  # the same warm-up whatever is counted
run = STAGES[stage]
for _ in range(count):
    run()
"""

COLLECTED = re.compile(r"Collected : (\d+)")
CALLGRIND = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]


def instructions(stage, count):
    """Instructions callgrind counts for a probe that runs `stage` `count` times."""
    result = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            "-c",
            PROBE,
            stage,
            str(count),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(COLLECTED.search(result.stderr)[1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=200, help="runs of each stage")
    options = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is needed: apt-get install valgrind")
    listed = subprocess.run([sys.executable, "-c", PROBE, "list", "0"], capture_output=True, text=True, check=True)
    stages = listed.stdout.splitlines()
    baseline = instructions("floor", 0)
    per = {stage: (instructions(stage, options.count) - baseline) / options.count for stage in stages}
    for name in [stage for stage in stages if stage.startswith("plugin ")]:
        per[name] -= per["copy"]  # each run made its own fresh copy
    floor, review = per.pop("floor"), per.pop("review")
    print(
        f"A 5-container sync review: {review / 1e3:,.0f} k instructions; the floor {floor / 1e3:,.0f} k; "
        f"review ÷ floor {review / floor:.1f}.\n"
    )
    print("| stage | k instructions | of the review |")
    print("|---|---:|---:|")
    for stage, count in per.items():
        print(f"| {stage} | {count / 1e3:,.1f} | {count / review:.0%} |")
    rest = review - sum(per.values())
    print(
        f"| the rest: hook calls and their timing, the mutated-by annotation, comparing | {rest / 1e3:,.1f} "
        f"| {rest / review:.0%} |"
    )


if __name__ == "__main__":
    main()
