"""The serving path's CPU, revision against revision: what each request costs the server.

Each revision is checked out into a temporary git worktree; its `podmutate serve` (one worker,
as issue measurements are made, or --workers) is driven by wrk over keep-alive TLS, and the CPU
of its whole process tree is read from /proc around each run: GET /healthz, the floor (a review
no plugin touches) and the full review of a 5-container sync pod. The revisions take turns,
A B A B, so that the machine's noise falls on all of them; each figure is the median of the
rounds.

    python -m bench.serving HEAD~2 HEAD~1 HEAD            # 3 rounds of 5 s per row
    python -m bench.serving --rounds 5 --seconds 10 main HEAD
"""

import argparse
import contextlib
import statistics
import subprocess
import tempfile
from pathlib import Path

import orjson

from bench.pods import airbyte_pod, review
from bench.run import ROOT, tree_pids, wrk
from tests.helpers import serve

ROWS = (
    ("GET /healthz", "/healthz", None),
    ("floor", "/mutate", orjson.dumps(review(airbyte_pod("sync", labelled=False)))),
    ("full", "/mutate", orjson.dumps(review(airbyte_pod("sync")))),
)


def measure(tree: Path, workers: int, connections: int, seconds: int) -> dict[str, tuple[float, float]]:
    """{row: (CPU ms per request, requests/s)} of the server in `tree`."""
    figures = {}
    with tempfile.TemporaryDirectory() as workdir, contextlib.chdir(tree):  # `python -m webhook` from the tree
        with serve(Path(workdir), workers=workers) as server:
            pids = tree_pids(server.process.pid)
            for label, path, body in ROWS:
                result = wrk(server.url + path, body, connections, seconds, pids=pids)
                if result["errors"]:
                    raise RuntimeError(f"{tree}: {result['errors']} errors on {label}")
                figures[label] = (result["cpu_ms"], result["rps"])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("revisions", nargs="+", help="git revisions to compare, in this order")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5, help="of wrk per row")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--workers", type=int, default=1)
    options = parser.parse_args()
    with contextlib.ExitStack() as stack:
        trees = {}
        for revision in options.revisions:
            tree = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="podmutate-rev-"))) / "tree"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), revision], check=True)
            stack.callback(subprocess.run, ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)])
            trees[revision] = tree
        runs: dict[str, list[dict]] = {revision: [] for revision in trees}
        for round_ in range(options.rounds):
            for revision, tree in trees.items():
                runs[revision].append(measure(tree, options.workers, options.connections, options.seconds))
                print(f"round {round_ + 1}, {revision}: {runs[revision][-1]}", flush=True)
    print(
        f"\nCPU of the server's process tree, ms per request (median of {options.rounds} rounds; "
        f"{options.workers} worker(s), wrk with {options.connections} keep-alive connections, "
        f"{options.seconds} s a row; requests/s in brackets):\n"
    )
    labels = [label for label, _path, _body in ROWS]
    print("| revision | " + " | ".join(labels) + " |")
    print("|---|" + "---:|" * len(labels))
    for revision, figures in runs.items():
        cells = []
        for label in labels:
            cpu = statistics.median(run[label][0] for run in figures)
            rate = statistics.median(run[label][1] for run in figures)
            cells.append(f"{cpu:.2f} ({rate:,.0f})")
        print(f"| {revision} | " + " | ".join(cells) + " |")
    first = options.revisions[0]
    for revision in options.revisions[1:]:
        ratios = []
        for label in labels:
            before = statistics.median(run[label][0] for run in runs[first])
            after = statistics.median(run[label][0] for run in runs[revision])
            ratios.append(f"{label} {after / before:.2f}")
        print(f"\n{revision} ÷ {first}, CPU per request: " + ", ".join(ratios))


if __name__ == "__main__":
    main()
