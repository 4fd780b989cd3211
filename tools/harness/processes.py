"""Processes the tests, the benchmarks and the node tooling start and watch.

`podmutate serve` on loopback with a verifying HTTPS session to it, free ports, stopping a
process, the CPU time of a process tree, and a memory cgroup set to the manifests' own limit.
"""

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from webhook.formats import quantity

ROOT = Path(__file__).resolve().parent.parent.parent
PODMUTATE = [sys.executable, "-m", "webhook"]


def wait_for(predicate, timeout=10):
    """The first true value of `predicate()` within `timeout` seconds, else None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    return None


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Served:
    """A running `podmutate serve` on 127.0.0.1 and a verifying HTTPS session to it."""

    def __init__(self, process, port, cert_dir, log_path, metrics_port=None):
        self.process = process
        self.port = port
        self.metrics_port = metrics_port
        self.cert_dir = cert_dir
        self.log_path = log_path
        self.url = f"https://127.0.0.1:{port}"
        self.ca_file = os.path.join(cert_dir, "ca.crt")
        self.session = requests.Session()

    def post(self, path, body, **kwargs):
        data = body if isinstance(body, bytes | str) else json.dumps(body)
        return self.session.post(
            self.url + path,
            data=data,
            timeout=kwargs.pop("timeout", 10),
            verify=self.ca_file,
            headers={"Content-Type": "application/json", **kwargs.pop("headers", {})},
            **kwargs,
        )

    def get(self, path, fresh=False):
        """GET `path` on the session's keep-alive connection, or with `fresh` on one of its own (a
        retiring worker closes its idle connections, and a reuse racing that close fails)."""
        # verify= on each call: a session's own is overridden by $REQUESTS_CA_BUNDLE.
        if fresh:
            return requests.get(self.url + path, timeout=10, verify=self.ca_file, headers={"Connection": "close"})
        return self.session.get(self.url + path, timeout=10, verify=self.ca_file)

    def metrics(self):
        """The samples of GET /metrics (plain HTTP, its own port), as metric_samples gives them."""
        return metric_samples(requests.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10).text)

    def log(self):
        with open(self.log_path, encoding="utf-8", errors="replace") as stream:
            return stream.read()


@contextlib.contextmanager
def serve(tmp_path, *, config=None, env=None, args=(), workers=1, cgroup=None):
    """Start `podmutate serve` with its own certificates (inside `cgroup`, a MemoryCgroup, when
    given); yield a Served once /readyz answers."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    cert_dir = tmp_path / "certs"
    command = [
        *PODMUTATE,
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port := free_port()),
        "--cert-dir",
        str(cert_dir),
        "--workers",
        str(workers),
        "--metrics-port",
        str(metrics_port := free_port()),
        *args,
    ]
    if config is not None:
        config_path = tmp_path / "podmutate.yaml"
        config_path.write_text(config if isinstance(config, str) else json.dumps(config))
        command += ["--config", str(config_path)]
    log_path = tmp_path / "serve.log"
    environment = {key: value for key, value in os.environ.items() if key != "PODMUTATE_CONFIG"}
    environment.update(env or {})
    if cgroup is not None:
        command = cgroup.command(command)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment)
    served = Served(process, port, str(cert_dir), str(log_path), metrics_port)
    try:
        wait_ready(served)
        # Every worker up, not just the first to answer: on a busy machine the others may take a while.
        if not wait_for(lambda: served.log().count("Running on https") >= workers, timeout=60):
            raise AssertionError(f"podmutate serve: not all {workers} workers up after 60s:\n{served.log()}")
        yield served
    finally:
        stop_process(process)


def stop_process(process, timeout=20):
    """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_ready(served, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if served.process.poll() is not None:
            raise AssertionError(f"podmutate serve exited with {served.process.returncode}:\n{served.log()}")
        if os.path.exists(served.ca_file):
            try:
                if served.get("/readyz").status_code == 200:
                    return
            except requests.ConnectionError:
                pass
        time.sleep(0.1)
    raise AssertionError(f"podmutate serve not ready after {timeout}s:\n{served.log()}")


def worker_pids(master):
    """The worker processes of a `podmutate serve` (spawned children; not multiprocessing's resource tracker)."""
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == master and b"spawn_main" in (entry / "cmdline").read_bytes():
                    children.append(int(entry.name))
    return sorted(children)


def cpu_seconds_of(pids):
    """User and system CPU seconds of the live processes `pids`."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def manifest_memory_limit():
    """The memory limit of podmutate's container in the kustomize base, in bytes."""
    with open(ROOT / "manifests" / "base" / "webhook" / "deployment.yaml") as stream:
        deployment = yaml.safe_load(stream)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return int(quantity(container["resources"]["limits"]["memory"]))


class MemoryCgroup:
    """A memory cgroup of its own (v1 or v2, below this process's), limited to `limit` bytes with
    no swap: what a container with that memory limit gets. Needs root."""

    def __init__(self, limit):
        self.limit = limit
        self.path = self._make(f"podmutate-test-{uuid.uuid4().hex[:8]}")

    @staticmethod
    def available():
        """Why no memory cgroup can be made here, or None when one can."""
        if os.geteuid() != 0:
            return "memory cgroups need root"
        if not os.path.exists("/sys/fs/cgroup/memory/cgroup.procs") and not os.path.exists(
            "/sys/fs/cgroup/cgroup.controllers"
        ):
            return "no memory cgroup controller is mounted"
        return None

    def _make(self, name):
        own = Path("/proc/self/cgroup").read_text().splitlines()
        v1 = [line.split(":", 2)[2] for line in own if line.split(":", 2)[1] == "memory"]
        if v1:
            self.version = 1
            path = Path("/sys/fs/cgroup/memory") / v1[0].lstrip("/") / name
            path.mkdir()
            (path / "memory.limit_in_bytes").write_text(str(self.limit))
            if (path / "memory.memsw.limit_in_bytes").exists():
                (path / "memory.memsw.limit_in_bytes").write_text(str(self.limit))
        else:
            self.version = 2
            unified = [line.split(":", 2)[2] for line in own if line.startswith("0::")][0]
            path = Path("/sys/fs/cgroup") / unified.lstrip("/") / name
            path.mkdir()
            (path / "memory.max").write_text(str(self.limit))
            (path / "memory.swap.max").write_text("0")
        return path

    def command(self, command):
        """`command`, run inside this cgroup."""
        return ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(self.path), *command]

    def oom_kills(self):
        name = "memory.oom_control" if self.version == 1 else "memory.events"
        for line in (self.path / name).read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def usage(self):
        """The memory the cgroup holds now, in bytes."""
        name = "memory.usage_in_bytes" if self.version == 1 else "memory.current"
        return int((self.path / name).read_text())

    def peak(self):
        """The most memory the cgroup has held, in bytes."""
        name = "memory.max_usage_in_bytes" if self.version == 1 else "memory.peak"
        return int((self.path / name).read_text())

    def remove(self):
        for _ in range(50):
            pids = [int(pid) for pid in (self.path / "cgroup.procs").read_text().split()]
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, 9)
            time.sleep(0.1)
        self.path.rmdir()


def abnormal_exits(log_text):
    """The exit statuses of workers that died (a crash, a kill) in a `podmutate serve` log; a worker
    retired on purpose (stuck threads, its memory ceiling) exits with 0 and is not one."""
    import re

    return [int(code) for code in re.findall(r"worker \d+ exited with (-?\d+)", log_text) if int(code) != 0]


def metric_samples(text):
    """Prometheus text as {(sample name, sorted label items): value}."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
