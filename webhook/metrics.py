"""Prometheus metrics: every name podmutate exports, in one place.

`podmutate serve` runs several worker processes. Before it starts them it points
PROMETHEUS_MULTIPROC_DIR at a fresh directory (prometheus-client's multiprocess mode): each
worker writes its values there, and the supervisor serves `/metrics` on a port of its own,
adding up every worker's, the dead ones' counters included. The certificates' expiry is read
from the files at each scrape, by the supervisor. Outside `serve` (offline, tests) the same
metrics count in-process and nobody reads them.

Names and labels follow controller-runtime's and Kyverno's: `_total` counters, `_seconds`
histograms, an `outcome` label with a closed set of values, job types as configured.
"""

from __future__ import annotations

import asyncio
import bisect
import glob
import os
import ssl
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping

import h11
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.registry import Collector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client's name; read when it is first imported
DEFAULT_PORT = 8000  # Kyverno's metrics port

# Up to the API server's own 10 s limit on a webhook; fine at the bottom, where reviews are.
REVIEW_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0)
PLUGIN_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 1.0, 10.0)
SIZE_BUCKETS = (1024, 4096, 16384, 65536, 262144, 1048576, 3145728)
OPERATION_BUCKETS = (0, 1, 2, 5, 10, 20, 50, 100)

REVIEWS = Counter(
    "podmutate_admission_reviews_total", "AdmissionReviews answered, by outcome and job type.", ["outcome", "job_type"]
)
REVIEW_DURATION = Histogram(
    "podmutate_admission_review_duration_seconds",
    "Time to answer one AdmissionReview, body parsed to answer serialised.",
    ["outcome"],
    buckets=REVIEW_BUCKETS,
)
PLUGIN_DURATION = Histogram(
    "podmutate_plugin_duration_seconds", "Time one plugin's mutate_pod took.", ["plugin"], buckets=PLUGIN_BUCKETS
)
PLUGIN_FAILURES = Counter(
    "podmutate_plugin_failures_total", "Reviews failed because a plugin raised, by plugin.", ["plugin"]
)
OVERRUNS = Counter(
    "podmutate_review_deadline_overruns_total",
    "Reviews still running at review_timeout_seconds, by the plugin they were in (empty: in none).",
    ["plugin"],
)
PATCH_OPERATIONS = Histogram(
    "podmutate_patch_operations", "JSON Patch operations in one answer.", buckets=OPERATION_BUCKETS
)
REQUEST_BYTES = Histogram("podmutate_request_body_bytes", "Size of an AdmissionReview body.", buckets=SIZE_BUCKETS)
UNREVIEWED = Counter(
    "podmutate_reviews_unreviewed_total",
    "Reviews answered by failure_mode without running the plugins: beyond the work bound, or no memory in time.",
    ["reason"],
)
BEYOND_WORK_BOUND, BUSY = "beyond_work_bound", "busy"  # its reasons
CONNECTIONS = Counter(
    "podmutate_connections_total", "Connections accepted (each a TLS handshake, whether it completes or not)."
)
IN_FLIGHT = Gauge("podmutate_admission_reviews_in_flight", "Reviews being answered now.", multiprocess_mode="livesum")
CONFIG_RELOADS = Counter(
    "podmutate_config_reloads_total", "Changes of the configuration file, taken or refused.", ["result"]
)
CERTIFICATE_RELOADS = Counter(
    "podmutate_certificate_reloads_total", "Changes of the serving pair on disk, taken or refused.", ["result"]
)
CONFIG_LAST_RELOAD_OK = Gauge(
    "podmutate_config_last_reload_successful",
    "1 when every worker's last attempt to load the configuration succeeded (0 while one keeps a last good one).",
    multiprocess_mode="livemin",
)
CONFIG_INFO = Gauge(
    "podmutate_config_info",
    "1 for the digest of the configuration in force (the one named on mutated pods), 0 for earlier ones.",
    ["digest"],
    multiprocess_mode="livemax",
)
SUCCESS, FAILURE = "success", "failure"
CERTIFICATE_EXPIRY = "podmutate_certificate_expiry_seconds"  # a gauge read at each scrape (CertificateExpiry)
CERTIFICATE_EXPIRY_LABELS = ("certificate",)

# The safety net's, read from it at each scrape by the supervisor, where it runs (SafetyNetFigures).
SAFETY_NET = {  # name as scraped: (type, labels, help)
    "podmutate_unmutated_job_pods": (
        "gauge",
        ("namespace", "job_type"),
        "Live job pods podmutate did not mutate, known to the safety net's leader.",
    ),
    "podmutate_unmutated_job_pods_found_total": (
        "counter",
        ("namespace", "job_type"),
        "Unmutated job pods this replica told of (a NotMutated Event on each), while leading.",
    ),
    "podmutate_unmutated_job_pods_recreated_total": (
        "counter",
        (),
        "Unmutated Pending job pods deleted for their controller to make again (action: recreate).",
    ),
    "podmutate_safety_net_leader": ("gauge", (), "1 on the replica that holds the safety net's Lease."),
}


class Batch:
    """Counters, gauges and histograms counted in plain Python, and written to the metrics at
    `flush()`. In multiprocess mode every count of a metric — a counter's, a gauge's, each
    histogram bucket's and its sum — takes prometheus-client's process-wide lock, a getpid()
    and a write to the worker's file: a review's metrics cost about 45 µs that way, a seventh of
    the review in process (BENCHMARKS.md), and here a few dict updates under one lock. Label
    values are kept as prometheus-client writes them, as strings (a plugin's job type may be
    anything). A worker
    `hold()`s its batch and flushes it at every heartbeat (HEARTBEAT_SECONDS, webhook.server)
    and before it ends; a scrape sees the counts up to the last flush. Until `hold()`, each
    count is written at once (offline, in tests)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[Counter | Gauge, tuple[str, ...]], float] = {}
        self._observed: dict[tuple[Histogram, tuple[str, ...]], tuple[list[float], list[int]]] = {}
        self.holding = False

    def hold(self) -> None:
        self.holding = True

    def inc(self, metric: Counter | Gauge, labels: tuple[object, ...] = (), amount: float = 1) -> None:
        key = (metric, tuple(map(str, labels)))
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + amount
        if not self.holding:
            self.flush()

    def observe(self, histogram: Histogram, value: float, labels: tuple[object, ...] = ()) -> None:
        bounds = histogram._upper_bounds  # ends with +Inf: the first bound at or above the value is its bucket
        key = (histogram, tuple(map(str, labels)))
        with self._lock:
            total, buckets = self._observed.get(key) or self._observed.setdefault(key, ([0.0], [0] * len(bounds)))
            total[0] += value
            buckets[bisect.bisect_left(bounds, value)] += 1
        if not self.holding:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            counts, self._counts = self._counts, {}
            observed, self._observed = self._observed, {}
        for (metric, labels), amount in counts.items():
            (metric.labels(*labels) if labels else metric).inc(amount)
        for (histogram, labels), (total, buckets) in observed.items():
            child = histogram.labels(*labels) if labels else histogram
            # what Histogram.observe writes, a bucket and the sum, for every observation at once
            child._sum.inc(total[0])
            for bucket, count in zip(child._buckets, buckets, strict=True):
                if count:
                    bucket.inc(count)


batch = Batch()  # what the serving path counts, in this process


def exported() -> dict[str, tuple[str, tuple[str, ...]]]:
    """Every metric family podmutate exports, by the name a scrape shows (a counter's with `_total`):
    its type and label names. What the docs' table and the dashboard's queries are held to."""
    families: dict[str, tuple[str, tuple[str, ...]]] = {}
    for value in globals().values():
        if isinstance(value, Counter | Gauge | Histogram):
            name = f"{value._name}_total" if value._type == "counter" else value._name
            families[name] = (value._type, tuple(value._labelnames))
    families[CERTIFICATE_EXPIRY] = ("gauge", CERTIFICATE_EXPIRY_LABELS)
    families.update({name: (kind, labels) for name, (kind, labels, _help) in SAFETY_NET.items()})
    return families


def config_in_force(digest: str, previous: str | None = None) -> None:
    """Record that this process now serves the configuration `digest`."""
    if previous and previous != digest:
        CONFIG_INFO.labels(previous).set(0)
    CONFIG_INFO.labels(digest).set(1)


class CertificateExpiry(Collector):
    """Seconds until the serving certificate and the CA that issued it expire, read at each scrape."""

    def __init__(self, cert_file: str) -> None:
        self.cert_file = cert_file

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from certs import CA_FILE, issued_by, load_bundle, now, read_bytes

        family = GaugeMetricFamily(
            CERTIFICATE_EXPIRY,
            "Seconds until notAfter of the certificate served and of the CA that issued it.",
            labels=list(CERTIFICATE_EXPIRY_LABELS),
        )
        at = now()
        try:
            serving = load_bundle(read_bytes(self.cert_file))[0]
        except (OSError, ValueError, IndexError):
            yield family  # no pair to describe (yet): no sample rather than a made-up one
            return
        family.add_metric(["serving"], (serving.not_valid_after_utc - at).total_seconds())
        bundle_path = os.path.join(os.path.dirname(self.cert_file), CA_FILE)
        try:
            issuers = [ca for ca in load_bundle(read_bytes(bundle_path)) if issued_by(serving, ca)]
        except (OSError, ValueError):
            issuers = []
        if issuers:
            family.add_metric(["ca"], (max(ca.not_valid_after_utc for ca in issuers) - at).total_seconds())
        yield family


class SafetyNetFigures(Collector):
    """The safety net's figures, from `read()` at each scrape: (leading, unmutated pods and pods told
    of by (namespace, job type), pods recreated)."""

    def __init__(
        self, read: Callable[[], tuple[bool, Mapping[tuple[str, str], int], Mapping[tuple[str, str], int], int]]
    ):
        self.read = read

    def collect(self) -> Iterator[Metric]:
        leading, unmutated, found, recreated = self.read()
        families = {}
        for name, (kind, labels, help_text) in SAFETY_NET.items():
            family = GaugeMetricFamily if kind == "gauge" else CounterMetricFamily
            families[name] = family(name.removesuffix("_total"), help_text, labels=list(labels))
        for (namespace, job_type), count in unmutated.items():
            families["podmutate_unmutated_job_pods"].add_metric([namespace, job_type], count)
        for (namespace, job_type), count in found.items():
            families["podmutate_unmutated_job_pods_found_total"].add_metric([namespace, job_type], count)
        families["podmutate_unmutated_job_pods_recreated_total"].add_metric([], recreated)
        families["podmutate_safety_net_leader"].add_metric([], 1 if leading else 0)
        yield from families.values()


def prepare_multiprocess() -> str:
    """Point prometheus-client's multiprocess mode at a fresh directory, for workers started after."""
    directory = tempfile.mkdtemp(prefix="podmutate-metrics-")
    os.environ[MULTIPROC_ENV] = directory
    return directory


# A dead worker's counters and histograms are added into one file of the dead per kind, and its
# own files removed: however many workers come and go, a scrape reads a bounded number of files.
ADDITIVE_KINDS = ("counter", "histogram", "summary")
DEAD = "dead"  # in place of a pid: "counter_dead.db"
_FILES_LOCK = threading.Lock()  # between a merge and a scrape, both in the supervisor


def worker_exited(pid: int) -> None:
    """Fold a dead worker's counters and histograms into the files of the dead (they keep counting
    in the sums) and remove its files, its gauges' with them."""
    directory = os.environ.get(MULTIPROC_ENV)
    if not directory:
        return
    with _FILES_LOCK:
        for path in glob.glob(os.path.join(directory, f"*_{pid}.db")):
            kind = os.path.basename(path).split("_")[0]
            if kind in ADDITIVE_KINDS:
                add_into(os.path.join(directory, f"{kind}_{DEAD}.db"), path)
            os.remove(path)


def add_into(total_path: str, path: str) -> None:
    """Add every value of the metrics file `path` to the same key of `total_path`."""
    total = MmapedDict(total_path)
    try:
        for key, value, timestamp, _position in MmapedDict.read_all_values_from_file(path):
            before, seen = total.read_value(key)
            total.write_value(key, before + value, max(seen, timestamp))
    finally:
        total.close()


class WorkersCollector(multiprocess.MultiProcessCollector):
    """Every worker's metrics added up, the dead ones' included; never while they are being merged."""

    def collect(self) -> Iterable[Metric]:
        with _FILES_LOCK:
            return list(super().collect())


# GET /metrics is served by an event loop of its own in the supervisor, as the webhook is: a
# connection is a coroutine, never a thread; each has METRICS_REQUEST_SECONDS to shake hands,
# send its request and read the answer, one request each, and past METRICS_CONNECTIONS at once
# more are closed at once. 2,000 half-sent requests cost a few MiB, not a thread each.
METRICS_REQUEST_SECONDS = 10.0
METRICS_CONNECTIONS = 32
METRICS_HEADER_BYTES = 8 * 1024

# Whether a request may read the metrics, from its Authorization header (None: it had none):
# (200, "") or the status that refuses it and why. Called off the event loop: it may block.
Access = Callable[[str | None], tuple[int, str]]


def serve_metrics(
    host: str,
    port: int,
    cert_file: str,
    tls: ssl.SSLContext | None = None,
    access: Access | None = None,
    collectors: Iterable[Collector] = (),
) -> None:
    """Serve every worker's metrics, added up, and the certificates' expiry on host:port/metrics,
    from an event loop in a daemon thread: over HTTPS with `tls`, to whom `access` allows when
    given. Raises OSError when the port is taken."""
    registry = CollectorRegistry()
    WorkersCollector(registry)
    registry.register(CertificateExpiry(cert_file))
    for collector in collectors:
        registry.register(collector)
    loop = asyncio.new_event_loop()
    endpoint = MetricsEndpoint(registry, access, tls)

    def connection() -> asyncio.StreamReaderProtocol:
        protocol = PausedUntilTls if tls else asyncio.StreamReaderProtocol
        return protocol(asyncio.StreamReader(loop=loop), endpoint.handle, loop=loop)

    server = loop.run_until_complete(loop.create_server(connection, host, port))
    threading.Thread(target=loop.run_forever, name="podmutate-metrics", daemon=True).start()
    del server  # the loop holds it


class PausedUntilTls(asyncio.StreamReaderProtocol):
    """A connection that reads nothing until start_tls takes it over: else a ClientHello that
    arrives first lands in the plain stream, the TLS layer never sees it, and the client waits
    out METRICS_REQUEST_SECONDS (start_tls resumes reading itself)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.pause_reading()  # type: ignore[attr-defined]
        super().connection_made(transport)


class MetricsEndpoint:
    """One HTTP/1.1 request per connection, parsed by h11: GET /metrics, or a short error."""

    def __init__(
        self, registry: CollectorRegistry, access: Access | None = None, tls: ssl.SSLContext | None = None
    ) -> None:
        self.registry = registry
        self.access = access
        self.tls = tls  # the handshake is made within the connection's time and under the cap
        self.connections = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            if self.connections <= METRICS_CONNECTIONS:
                await asyncio.wait_for(self._answer(reader, writer), METRICS_REQUEST_SECONDS)
        except (TimeoutError, ConnectionError, ssl.SSLError, h11.ProtocolError):
            pass
        finally:
            self.connections -= 1
            writer.close()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.tls is not None:  # here, not by start_server: a connection shaking hands holds TLS buffers
            await writer.start_tls(self.tls)
        connection = h11.Connection(h11.SERVER, max_incomplete_event_size=METRICS_HEADER_BYTES)
        event: object = h11.NEED_DATA
        while event is h11.NEED_DATA:
            connection.receive_data(await reader.read(4096))
            event = connection.next_event()
        if not isinstance(event, h11.Request):
            return
        loop = asyncio.get_running_loop()
        status, reason = 200, ""
        if event.method != b"GET" or event.target.split(b"?")[0] != b"/metrics":
            status, reason = 404, "only GET /metrics is served here"
        elif self.access is not None:
            authorization = next((value for name, value in event.headers if name == b"authorization"), None)
            header = authorization.decode("latin-1") if authorization is not None else None
            status, reason = await loop.run_in_executor(None, self.access, header)
        if status == 200:
            content_type = CONTENT_TYPE_LATEST
            body = await loop.run_in_executor(None, generate_latest, self.registry)
        else:
            content_type, body = "text/plain", f"{reason}\n".encode()
        headers = [("content-type", content_type), ("content-length", str(len(body))), ("connection", "close")]
        if status == 401:
            headers.append(("www-authenticate", 'Bearer realm="podmutate metrics"'))
        for outgoing in (h11.Response(status_code=status, headers=headers), h11.Data(data=body), h11.EndOfMessage()):
            writer.write(connection.send(outgoing) or b"")
        await writer.drain()
