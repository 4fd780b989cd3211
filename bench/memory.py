"""Peak memory of one review against its body's size, for each shape that makes a review big.

Each figure is measured in a fresh process: the review (parse, plugins, patch, answer) of one
body, as the view runs it, after a small review has warmed everything up; the peak is the
process's high-water mark (VmHWM) above what it held before. The estimate is webhook.budget's
`cost_of`, which the server reserves before it parses a body.

    .venv/bin/python -m bench.memory                 # every shape at 0.05, 0.25, 1 and 1.4 MiB
"""

import argparse
import json
import subprocess
import sys

SIZES = (0.05, 0.25, 1.0, 1.4)

PROBE = """
import gc, json, sys
import orjson
from tools.harness import hostile
from webhook import admission, wire
from webhook.engine import load_engine
engine = load_engine(environ={})
shape, size = sys.argv[1], float(sys.argv[2])
body = hostile.sized(shape, int(size * 2**20))
admission.answer(orjson.loads(hostile.sized("containers", 20_000)), engine)
gc.collect()
def status(name):
    return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith(name))
before = status("VmRSS")
open("/proc/self/clear_refs", "w").write("5")  # the high-water mark starts again from here
answer = admission.answer(orjson.loads(body), engine)
encoded = wire.encode(answer.response)
print(json.dumps({"body": len(body), "peak": status("VmHWM") - before, "outcome": answer.outcome}))
"""


def measure(shape, size):
    result = subprocess.run([sys.executable, "-c", PROBE, shape, str(size)], capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


def main():
    from tools.harness import hostile
    from webhook import budget

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=float, nargs="*", default=SIZES, help="body sizes in MiB")
    options = parser.parse_args()
    print("| shape | body | JSON values | peak of the review | × body | estimate | within the work bound |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for shape in sorted(hostile.SHAPES):
        for size in options.sizes:
            figures = measure(shape, size)
            body = hostile.sized(shape, int(size * 2**20))
            values, estimate = budget.values_in(body), budget.cost_of(body)
            within = "yes" if not budget.beyond_bound(body, estimate, budget.DEFAULT_BUDGET) else "no"
            print(
                f"| {shape} | {figures['body'] / 2**20:.2f} MiB | {values:,} | {figures['peak'] / 2**20:.1f} MiB "
                f"| {figures['peak'] / figures['body']:.0f} | {estimate / 2**20:.1f} MiB | {within} |"
            )


if __name__ == "__main__":
    main()
