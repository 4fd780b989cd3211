"""The serving path's CPU, revision against revision: what each request costs the server.

Each revision is checked out into a temporary git worktree; its `podmutate serve` (one worker,
as issue measurements are made, or --workers) is driven by wrk over keep-alive TLS, and the CPU
of its whole process tree is read from /proc around each run: GET /healthz, the floor (a review
no plugin touches) and the full review of a 5-container sync pod. The revisions take turns,
A B A B, so that the machine's noise falls on all of them; each figure is the median of the
rounds.

    python -m bench.serving HEAD~2 HEAD~1 HEAD            # 3 rounds of 5 s per row
    python -m bench.serving --rounds 5 --seconds 10 main HEAD
    python -m bench.serving --granian HEAD                # and the same Flask app served by granian

With --granian, each round also serves the first revision's Flask app (`create_app()`, the same
certificate) from granian's WSGI interface, one worker, its HTTP/1.1 and TLS in Rust, and
measures it the same way: what a server whose protocol is not in Python would save.
"""

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import orjson

from bench.run import ROOT, tree_pids, wrk
from tools.harness.pods import airbyte_pod, review
from tools.harness.processes import cpu_seconds_of, free_port, serve, wait_for

GRANIAN = "granian (same app)"

ROWS = (
    ("GET /healthz", "/healthz", None),
    ("floor", "/mutate", orjson.dumps(review(airbyte_pod("sync", labelled=False)))),
    ("full", "/mutate", orjson.dumps(review(airbyte_pod("sync")))),
)


def measure(
    tree: Path, workers: int, connections: int, seconds: int, granian: bool = False
) -> dict[str, tuple[float, float]]:
    """{row: (CPU ms per request, requests/s)} of the server in `tree` (with `granian`, of its
    Flask app under granian, on the certificate `podmutate serve` made)."""
    with tempfile.TemporaryDirectory() as workdir, contextlib.chdir(tree):  # `python -m webhook` from the tree
        with serve(Path(workdir), workers=workers) as server:
            if not granian:
                return rows(server.url, tree_pids(server.process.pid), connections, seconds)
            with granian_server(tree, server.cert_dir, workers) as (url, pids):
                return rows(url, pids, connections, seconds)


def rows(url: str, pids: list[int], connections: int, seconds: int) -> dict[str, tuple[float, float]]:
    figures = {}
    for label, path, body in ROWS:
        result = wrk(url + path, body, connections, seconds, pids=pids)
        if result["errors"]:
            raise RuntimeError(f"{url}: {result['errors']} errors on {label}")
        figures[label] = (result["cpu_ms"], result["rps"])
    return figures


@contextlib.contextmanager
def granian_server(tree: Path, cert_dir: str, workers: int):
    """granian serving `create_app()` of `tree` over TLS; yields its URL and process tree."""
    port = free_port()
    command = [
        *(sys.executable, "-m", "granian", "--interface", "wsgi", "--http", "1", "--no-ws"),
        *("--host", "127.0.0.1", "--port", str(port), "--workers", str(workers), "--blocking-threads", "8"),
        *("--ssl-certificate", f"{cert_dir}/tls.crt", "--ssl-keyfile", f"{cert_dir}/tls.key"),
        *("--log-level", "warning", "--factory", "webhook.app:create_app"),
    ]
    process = subprocess.Popen(command, env={**os.environ, "PYTHONPATH": str(tree)}, stdout=subprocess.DEVNULL)
    url = f"https://127.0.0.1:{port}"
    try:
        if not wait_for(lambda: cpu_seconds_of(descendants(process.pid)) > 0 and answers(url, cert_dir), timeout=60):
            raise RuntimeError("granian did not answer within 60 s")
        yield url, descendants(process.pid)
    finally:
        process.terminate()
        process.wait()


def answers(url: str, cert_dir: str) -> bool:
    import requests

    try:
        return requests.get(url + "/healthz", verify=f"{cert_dir}/ca.crt", timeout=1).ok
    except requests.RequestException:
        return False


def descendants(pid: int) -> list[int]:
    """`pid` and every process under it."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(parent, []).append(int(entry.name))
    found, pending = [], [pid]
    while pending:
        found.append(pending.pop())
        pending.extend(children.get(found[-1], ()))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("revisions", nargs="+", help="git revisions to compare, in this order")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5, help="of wrk per row")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--granian", action="store_true", help="also the first revision's app under granian")
    options = parser.parse_args()
    with contextlib.ExitStack() as stack:
        trees = {}
        for revision in options.revisions:
            tree = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="podmutate-rev-"))) / "tree"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), revision], check=True)
            stack.callback(subprocess.run, ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)])
            trees[revision] = tree
        servers = {revision: (tree, False) for revision, tree in trees.items()}
        if options.granian:
            servers[GRANIAN] = (trees[options.revisions[0]], True)
        runs: dict[str, list[dict]] = {name: [] for name in servers}
        for round_ in range(options.rounds):
            for name, (tree, granian) in servers.items():
                runs[name].append(measure(tree, options.workers, options.connections, options.seconds, granian))
                print(f"round {round_ + 1}, {name}: {runs[name][-1]}", flush=True)
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
    for revision in list(runs)[1:]:
        ratios = []
        for label in labels:
            before = statistics.median(run[label][0] for run in runs[first])
            after = statistics.median(run[label][0] for run in runs[revision])
            ratios.append(f"{label} {after / before:.2f}")
        print(f"\n{revision} ÷ {first}, CPU per request: " + ", ".join(ratios))


if __name__ == "__main__":
    main()
