"""The soak: reviews through a real API server at half the measured peak, for a long while, with
a configuration change and a certificate rotation every few minutes.

podmutate runs as the manifests run it: two workers in a memory cgroup at the manifests' limit.
The pods are created with dryRun=All (the webhook is called, etcd does not fill up). Sampled every
half minute: the memory the cgroup holds and the resident memory, open files and threads of the
supervisor and its workers, and the p99 of the reviews since the last sample. Reported: growth
after warm-up, failed creates, and the p99's drift.

    sudo .venv/bin/python -m bench.soak                     # 30 minutes, a change every 3
    sudo .venv/bin/python -m bench.soak --minutes 5 --change-every 60
"""

import argparse
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import orjson
import requests

from bench.run import creations, percentile, register_webhook
from certs import CA, CA_FILE, CA_KEY_FILE, CERT_FILE, KEY_FILE
from tools.harness.controlplane import TOKEN, ControlPlane, find_binaries
from tools.harness.pods import airbyte_pod
from tools.harness.processes import MemoryCgroup, abnormal_exits, manifest_memory_limit, serve, worker_pids
from webhook.files import write_atomically

SAMPLE_SECONDS = 30
NAMESPACE = "soak"


def process_figures(pids):
    """Resident MiB, open files and threads, summed over `pids`."""
    rss = files = threads = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            rss += next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS")) / 1024
            threads += next(int(line.split()[1]) for line in status.splitlines() if line.startswith("Threads"))
            files += len(os.listdir(f"/proc/{pid}/fd"))
        except (OSError, StopIteration):
            continue
    return rss, files, threads


def rotate(cert_dir):
    """A new serving certificate from the same CA, written as a rotation writes it."""
    ca = CA.load(Path(cert_dir, CA_FILE).read_bytes(), Path(cert_dir, CA_KEY_FILE).read_bytes())
    serving = ca.issue("localhost", "127.0.0.1")
    write_atomically(os.path.join(cert_dir, KEY_FILE), serving.key_pem(), mode=0o600)
    write_atomically(os.path.join(cert_dir, CERT_FILE), serving.cert_pem())


def paced_creations(control_plane, pod, rate, stop, latencies, failures):
    """Create `pod` (dry run) at `rate` per second from a few threads until `stop` is set."""
    url = f"{control_plane.url}/api/v1/namespaces/{NAMESPACE}/pods?dryRun=All"
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    threads = 8
    interval = threads / rate

    def client(index):
        with requests.Session() as session:
            due = time.monotonic() + index * interval / threads
            count = 0
            while not stop.is_set():
                time.sleep(max(0.0, due - time.monotonic()))
                due += interval
                body = orjson.dumps({**pod, "metadata": {**pod["metadata"], "name": f"soak-{index}-{count}"}})
                count += 1
                started = time.perf_counter()
                try:
                    answer = session.post(url, data=body, headers=headers, verify=control_plane.ca_file, timeout=30)
                    problem = None if answer.status_code == 201 else f"{answer.status_code} {answer.text[:300]}"
                    if problem is None and "initContainers" not in answer.json()["spec"]:
                        problem = "created unmutated"
                except (requests.RequestException, ValueError, KeyError) as error:
                    problem = f"{type(error).__name__}: {error}"
                latencies.append((time.perf_counter() - started) * 1000)
                if problem:
                    failures.append((time.monotonic(), problem))

    workers = [threading.Thread(target=client, args=(index,), daemon=True) for index in range(threads)]
    for worker in workers:
        worker.start()
    return workers


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--change-every", type=float, default=180, help="seconds between changes")
    parser.add_argument("--warm-up", type=float, default=300, help="seconds before the baseline sample")
    options = parser.parse_args()
    binaries = find_binaries()
    if binaries is None:
        raise SystemExit("the control plane is needed: tools/controlplane/build.sh")
    workdir = Path(tempfile.mkdtemp(prefix="podmutate-soak-"))
    control_plane = ControlPlane(binaries, workdir / "controlplane", audit=False)
    os.makedirs(control_plane.workdir)
    control_plane.start()
    cgroup = MemoryCgroup(manifest_memory_limit())
    config_path = workdir / "serve" / "podmutate.yaml"
    try:
        with serve(
            workdir / "serve", workers=2, cgroup=cgroup, config="job_types: {sync: {labels: {tier: a}}}\n"
        ) as served:
            import kubernetes

            client = kubernetes.config.new_client_from_config(config_file=control_plane.kubeconfig)
            kubernetes.client.CoreV1Api(client).create_namespace({"metadata": {"name": NAMESPACE}})
            register_webhook(client, NAMESPACE, served)
            pod = airbyte_pod("sync")
            pod["metadata"]["namespace"] = NAMESPACE
            pod["metadata"]["labels"]["podmutate.io/job-type"] = "sync"
            time.sleep(2)
            started = time.perf_counter()
            latencies, errors = creations(control_plane, NAMESPACE, pod, 50, 1000)
            peak = (1000 - len(errors)) / (time.perf_counter() - started)
            kubernetes.client.CoreV1Api(client).delete_collection_namespaced_pod(NAMESPACE)
            rate = peak / 2
            print(f"peak {peak:.0f} creations/s (50 clients); soaking at {rate:.0f}/s for {options.minutes:g} min")
            stop, latencies, failures = threading.Event(), [], []
            paced_creations(control_plane, pod, rate, stop, latencies, failures)
            samples, changes = [], 0
            began = next_change = time.monotonic()
            next_change += options.change_every
            seen = 0
            while time.monotonic() - began < options.minutes * 60:
                time.sleep(SAMPLE_SECONDS)
                if time.monotonic() >= next_change:
                    if changes % 2 == 0:
                        config_path.write_text(f"job_types: {{sync: {{labels: {{tier: t{changes}}}}}}}\n")
                    else:
                        rotate(served.cert_dir)
                    changes += 1
                    next_change += options.change_every
                window, seen = latencies[seen:], len(latencies)
                rss, files, threads = process_figures([served.process.pid, *worker_pids(served.process.pid)])
                cgroup_mib = cgroup.usage() / 2**20
                samples.append((time.monotonic() - began, cgroup_mib, rss, files, threads, percentile(window, 0.99)))
                print(
                    f"{samples[-1][0]:6.0f} s  cgroup {cgroup_mib:5.0f} MiB  RSS {rss:5.0f} MiB  files {files:4d}  "
                    f"threads {threads:3d}  p99 {samples[-1][5]:6.1f} ms  reviews {seen}  failed {len(failures)}",
                    flush=True,
                )
            stop.set()
            time.sleep(2)
            deaths = abnormal_exits(served.log())
    finally:
        cgroup_peak = cgroup.peak()
        oom = cgroup.oom_kills()
        cgroup.remove()
        control_plane.stop()
    after = [sample for sample in samples if sample[0] >= options.warm_up] or samples
    first, last = after[0], after[-1]

    def growth(index):
        return (last[index] - first[index]) / first[index] * 100

    p99_first = statistics.median(sample[5] for sample in after[:3])
    p99_last = statistics.median(sample[5] for sample in after[-3:])
    print()
    print("| figure | after warm-up | at the end | change |")
    print("|---|---:|---:|---:|")
    for index, name in (
        (1, "cgroup memory, MiB"),
        (2, "RSS of the three processes, MiB"),
        (3, "open files"),
        (4, "threads"),
    ):
        print(f"| {name} | {first[index]:.0f} | {last[index]:.0f} | {growth(index):+.1f} % |")
    drift = p99_last / p99_first - 1
    print(f"| p99 create latency, ms (median of 3 samples) | {p99_first:.1f} | {p99_last:.1f} | {drift:+.1%} |")
    for at, problem in failures:
        print(f"- failed at {at - began:.0f} s: {problem}")
    print(
        f"\n{len(latencies):,} creates at {rate:.0f}/s over {options.minutes:g} min, {changes} changes "
        f"(configuration and certificate, alternately); failed: {len(failures)}; workers died: {len(deaths)}; "
        f"OOM kills: {oom}; cgroup peak {cgroup_peak / 2**20:.0f} MiB of {manifest_memory_limit() / 2**20:.0f}"
    )


if __name__ == "__main__":
    main()
