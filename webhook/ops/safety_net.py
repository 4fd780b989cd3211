"""The safety net: job pods that got through without podmutate, found and told of as they appear.

With `failurePolicy: Ignore`, every job pod created while podmutate is unreachable is admitted
as written, and the API server tells nobody. In `serve`, when `safety_net.enabled`, one replica
at a time — the holder of a coordination.k8s.io Lease, taken over when it stops renewing, as
controller-runtime's leader election does — lists and watches the pods of the job namespaces,
runs podmutate on each as stored (webhook.ops.audit) and, for each unmutated one: a Warning
Event on the pod (reason NotMutated, the paths podmutate would change), a log line, the gauge
podmutate_unmutated_job_pods and a counter. With `action: recreate`, a pod still Pending that
has a controller (a Job...) is deleted so that its owner makes it again, mutated this time;
bare pods only with `recreate_bare_pods`; never more than `max_deletions_per_minute`, never in
an excluded namespace. A pod is told of once: an Event already on it (from an earlier leader)
counts as told.
"""

from __future__ import annotations

import datetime
import logging
import os
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import ijson
import orjson
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from webhook.engine import Engine, EngineWatcher
from webhook.errors import clipped
from webhook.ops.audit import UNMUTATED, Finding, assess, webhook_selectors
from webhook.ops.doctor import selector_matches

log = logging.getLogger(__name__)

REASON = "NotMutated"
EVENT_MESSAGE = 1024  # characters: an Event's message is at most 1 KiB
COMPONENT = "podmutate-safety-net"
LEASE_SECONDS = 15  # controller-runtime's LeaseDuration
RENEW_SECONDS = 5  # how often the holder renews, and a candidate tries (a third of it)
WATCH_SECONDS = 300  # a watch is opened again at least this often (the API server ends them too)
BACKOFF_SECONDS = 5.0
PAGE = 10  # pods per list call: a page of the largest pods the API server stores is 15 MiB
SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def own_namespace() -> str:
    """The namespace podmutate runs in: $POD_NAMESPACE, else its service account's, else default."""
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    try:
        with open(SERVICE_ACCOUNT_NAMESPACE) as stream:
            return stream.read().strip() or "default"
    except OSError:
        return "default"


def identity() -> str:
    """Who holds the Lease: the pod's name (its host name) and a suffix of this process's own."""
    return f"{os.environ.get('HOSTNAME') or socket.gethostname()}_{uuid.uuid4().hex[:8]}"


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def micro_time(at: datetime.datetime) -> str:
    """A metav1.MicroTime as the API server writes it."""
    return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Lease:
    """Leader election on a coordination.k8s.io/v1 Lease, as client-go's leaderelection does it.

    `hold()` takes the Lease when nobody holds it or its holder stopped renewing it for
    `duration` seconds, renews it when this process holds it, and says whether it does. Every
    write names the resourceVersion it read: of two candidates, one wins and the other gets 409.
    """

    def __init__(self, client: Any, namespace: str, name: str, holder: str, duration: int = LEASE_SECONDS) -> None:
        import kubernetes

        self.api = kubernetes.client.CoordinationV1Api(client)
        self.namespace, self.name, self.holder, self.duration = namespace, name, holder, duration

    def hold(self) -> bool:
        now = utc_now()
        spec = {
            "holderIdentity": self.holder,
            "leaseDurationSeconds": self.duration,
            "renewTime": micro_time(now),
        }
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace)
        except ApiException as error:
            if error.status != 404:
                raise
            body = {
                "metadata": {"name": self.name},
                "spec": {**spec, "acquireTime": micro_time(now), "leaseTransitions": 0},
            }
            return self._write(lambda: self.api.create_namespaced_lease(self.namespace, body))
        current = lease.spec
        if current.holder_identity == self.holder:
            spec["acquireTime"] = micro_time(current.acquire_time or now)
            spec["leaseTransitions"] = current.lease_transitions or 0
        else:
            renewed = current.renew_time or current.acquire_time
            expires = (
                renewed + datetime.timedelta(seconds=current.lease_duration_seconds or self.duration)
                if renewed
                else now
            )
            if current.holder_identity and expires > now:
                return False  # another replica holds it and renews it
            spec["acquireTime"] = micro_time(now)
            spec["leaseTransitions"] = (current.lease_transitions or 0) + 1
        body = {"metadata": {"name": self.name, "resourceVersion": lease.metadata.resource_version}, "spec": spec}
        return self._write(lambda: self.api.replace_namespaced_lease(self.name, self.namespace, body))

    def _write(self, write: Callable[[], Any]) -> bool:
        try:
            write()
        except ApiException as error:
            if error.status in (409, 422):  # another candidate wrote first
                return False
            raise
        return True

    def release(self) -> None:
        """Give the Lease up at once (on a clean stop), so that another replica need not wait it out."""
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace)
            if lease.spec.holder_identity != self.holder:
                return
            body = {
                "metadata": {"name": self.name, "resourceVersion": lease.metadata.resource_version},
                "spec": {"holderIdentity": None, "leaseDurationSeconds": 1, "renewTime": micro_time(utc_now())},
            }
            self.api.replace_namespaced_lease(self.name, self.namespace, body)
        except (ApiException, HTTPError, OSError) as error:
            log.warning("safety net: could not give the Lease up: %s", error)


class DeletionBudget:
    """At most `per_minute` deletions in any minute (a sliding window)."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute, self.clock = per_minute, clock
        self.spent: list[float] = []

    def take(self) -> bool:
        now = self.clock()
        self.spent = [at for at in self.spent if now - at < 60]
        if len(self.spent) >= self.per_minute:
            return False
        self.spent.append(now)
        return True


class SafetyNet:
    """Watches the job namespaces while it holds the Lease; see the module's docstring."""

    def __init__(
        self,
        client: Any,
        engine: Callable[[], Engine],
        *,
        namespace: str | None = None,
        holder: str | None = None,
        lease_seconds: int = LEASE_SECONDS,
        renew_seconds: float = RENEW_SECONDS,
    ) -> None:
        import kubernetes

        self.client, self.engine = client, engine
        self.core = kubernetes.client.CoreV1Api(client)
        self.holder = holder or identity()
        self.namespace = namespace or own_namespace()
        self.lease_seconds, self.renew_seconds = lease_seconds, renew_seconds
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._leading = threading.Event()
        self._unmutated: dict[str, Finding] = {}  # uid -> finding, live unmutated pods
        self._told: set[str] = set()  # uids told of (an Event is on them)
        self._found: Counter = Counter()
        self._recreated = 0
        self._budget: DeletionBudget | None = None
        self._watchers: list[threading.Thread] = []
        self._thread: threading.Thread | None = None
        self._release = True

    @property
    def settings(self) -> Mapping[str, Any]:
        return self.engine().config.safety_net

    # -- leading ---------------------------------------------------------------------------

    def run(self) -> None:
        """Stand for the Lease and watch while holding it, until stop()."""
        lease = Lease(self.client, self.namespace, self.settings["lease"], self.holder, self.lease_seconds)
        log.info("safety net: standing for Lease %s/%s as %s", self.namespace, self.settings["lease"], self.holder)
        while not self.stopping.is_set():
            try:
                holding = lease.hold()
            except (ApiException, HTTPError, OSError) as error:
                log.warning("safety net: cannot reach the Lease: %s", error)
                holding = False
            if holding and not self._leading.is_set():
                log.info("safety net: leading (Lease %s/%s)", self.namespace, self.settings["lease"])
                self._lead()
            elif not holding and self._leading.is_set():
                log.warning("safety net: lost the Lease; no longer watching")
                self._follow()
            self.stopping.wait(self.renew_seconds if holding else self.renew_seconds / 2)
        if self._leading.is_set():
            self._follow()
            if self._release:
                lease.release()

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="podmutate-safety-net", daemon=True)
        self._thread.start()

    def stop(self, release: bool = True, timeout: float = 10.0) -> None:
        """Stop watching and, with `release`, give the Lease up for another replica to take at once."""
        self._release = release
        self.stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _lead(self) -> None:
        self._leading.set()
        self._budget = DeletionBudget(self.settings["max_deletions_per_minute"])
        self._watchers = [
            threading.Thread(
                target=self.watch, args=(namespace,), name=f"podmutate-safety-net-{namespace}", daemon=True
            )
            for namespace in self.settings["namespaces"]
        ]
        for watcher in self._watchers:
            watcher.start()

    def _follow(self) -> None:
        self._leading.clear()
        for watcher in self._watchers:
            watcher.join(timeout=WATCH_SECONDS)
        self._watchers = []
        with self._lock:
            self._unmutated.clear()

    @property
    def leading(self) -> bool:
        return self._leading.is_set()

    def figures(self) -> tuple[bool, Counter, Counter, int]:
        """What the metrics show (metrics.SafetyNetFigures): whether leading, the live unmutated
        pods and the pods told of by (namespace, job type), the pods deleted to be made again."""
        with self._lock:
            unmutated = Counter((finding.namespace, finding.job_type) for finding in self._unmutated.values())
            return self.leading, unmutated, Counter(self._found), self._recreated

    def unmutated(self) -> list[Finding]:
        with self._lock:
            return sorted(self._unmutated.values(), key=lambda finding: (finding.namespace, finding.name))

    # -- watching ---------------------------------------------------------------------------

    def watch(self, namespace: str) -> None:
        """List the namespace's pods, then watch them from that resourceVersion; list again after
        410 Gone (the version is too old) and after an error, until no longer leading."""
        version: str | None = None
        while self.leading and not self.stopping.is_set():
            try:
                if version is None:
                    version = self.relist(namespace)
                for event in self.stream(namespace, version):
                    kind, found = event.get("type"), event.get("object") or {}
                    if kind == "ERROR":
                        raise ApiException(status=found.get("code"), reason=found.get("message"))
                    version = (found.get("metadata") or {}).get("resourceVersion") or version
                    if kind == "DELETED":
                        self.forget(found, deleted=True)
                    elif kind in ("ADDED", "MODIFIED"):
                        self.observe(found)
                    if not self.leading or self.stopping.is_set():
                        break
            except ApiException as error:
                if error.status == 410:
                    log.info("safety net: %s: watch too old (410 Gone), listing again", namespace)
                else:
                    log.warning("safety net: %s: %s %s; listing again", namespace, error.status, error.reason)
                    self.stopping.wait(BACKOFF_SECONDS)
                version = None
            except (HTTPError, OSError, ValueError) as error:
                log.warning("safety net: %s: %s; listing again", namespace, error)
                version = None
                self.stopping.wait(BACKOFF_SECONDS)

    def stream(self, namespace: str, version: str) -> Iterator[dict]:
        """The watch events of the namespace's pods from `version`, as plain JSON, one a line (the
        client's Watch makes models of each: twice a pod's weight as dicts). It ends within two
        renewals, so that a replica that lost the Lease stops watching soon."""
        answer = self.core.list_namespaced_pod(
            namespace,
            watch=True,
            resource_version=version,
            allow_watch_bookmarks=True,
            timeout_seconds=min(WATCH_SECONDS, max(1, round(self.renew_seconds * 2))),
            _preload_content=False,
        )
        try:
            pending = b""
            for chunk in answer.stream(64 * 1024, decode_content=False):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield orjson.loads(line)
        finally:
            answer.release_conn()

    def relist(self, namespace: str) -> str:
        """Observe every pod of the namespace; forget those no longer there; return the version.

        A page is PAGE pods of raw JSON (at most 1.5 MiB each, etcd's limit), taken apart one pod
        at a time: a pod of 1.1 MiB of the smallest fields is 25 MiB of dicts (56 MiB as the
        client's models and their dict), so a page parsed at once would be ten of those, in the
        supervisor, under the manifests' memory limit."""
        present: set[str] = set()
        token = None
        while True:
            answer = self.core.list_namespaced_pod(namespace, limit=PAGE, _continue=token, _preload_content=False)
            page = answer.data
            metadata = next(ijson.items(page, "metadata"), None) or {}
            for pod in ijson.items(page, "items.item", use_float=True):
                present.add((pod.get("metadata") or {}).get("uid") or "")
                self.observe(pod)
            del page
            token = metadata.get("continue")
            if not token:
                break
        with self._lock:
            for uid in [uid for uid, finding in self._unmutated.items() if finding.namespace == namespace]:
                if uid not in present:
                    del self._unmutated[uid]
        return metadata["resourceVersion"]

    def is_job_pod(self, pod: dict) -> bool:
        """Whether the webhook's objectSelectors match the pod (podmutate's classification decides
        alone when the webhook configuration cannot be read)."""
        selectors = self._selectors()
        labels = (pod.get("metadata") or {}).get("labels") or {}
        return selectors is None or any(selector_matches(object_selector, labels) for _ns, object_selector in selectors)

    _selector_cache: tuple[float, list | None] = (0.0, None)

    def _selectors(self) -> list | None:
        read_at, selectors = self._selector_cache
        if time.monotonic() - read_at < 60:
            return selectors
        import kubernetes

        try:
            configuration = self.client.sanitize_for_serialization(
                kubernetes.client.AdmissionregistrationV1Api(self.client).read_mutating_webhook_configuration(
                    self.settings["webhook_config"]
                )
            )
            selectors = webhook_selectors(configuration)
        except (ApiException, HTTPError, OSError) as error:
            log.debug("safety net: webhook configuration not read (%s): podmutate's classification decides", error)
            selectors = None
        self._selector_cache = (time.monotonic(), selectors)
        return selectors

    def forget(self, pod: dict, deleted: bool = False) -> None:
        uid = (pod.get("metadata") or {}).get("uid") or ""
        with self._lock:
            self._unmutated.pop(uid, None)
            if deleted:
                self._told.discard(uid)

    def observe(self, pod: dict) -> None:
        """Assess one pod as stored; tell of it (once) and act on it when it is unmutated."""
        settings = self.settings
        metadata = pod.get("metadata") or {}
        if metadata.get("deletionTimestamp"):
            self.forget(pod)  # on its way out: nothing to tell of or to delete
            return
        if metadata.get("namespace") in settings["exclude_namespaces"] or not self.is_job_pod(pod):
            return
        finding = assess(pod, self.engine())
        if finding is None or finding.state != UNMUTATED or finding.phase in ("Succeeded", "Failed"):
            self.forget(pod)
            return
        with self._lock:
            self._unmutated[finding.uid] = finding
            told = finding.uid in self._told
        if not told:
            self.tell(finding)
        if settings["action"] == "recreate":
            self.recreate(finding, settings)

    def tell(self, finding: Finding) -> None:
        """A Warning Event on the pod, a log line and the counter; once per pod, across leaders."""
        where = f"{finding.namespace}/{finding.name}"
        try:
            earlier = self.core.list_namespaced_event(
                finding.namespace, field_selector=f"involvedObject.uid={finding.uid},reason={REASON}"
            ).items
        except ApiException as error:
            log.warning("safety net: %s: cannot read its Events: %s %s", where, error.status, error.reason)
            return
        with self._lock:
            self._told.add(finding.uid)
        if earlier:
            return  # an earlier leader told of it
        changes = ", ".join(finding.changes)
        log.warning(
            "safety net: job pod %s (%s) was not mutated by podmutate; it would change %s",
            where,
            finding.job_type,
            changes,
        )
        with self._lock:
            self._found[(finding.namespace, finding.job_type)] += 1
        now = utc_now()
        event = {
            "metadata": {"generateName": f"{finding.name}.", "namespace": finding.namespace},
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": finding.name,
                "namespace": finding.namespace,
                "uid": finding.uid,
            },
            "reason": REASON,
            "type": "Warning",
            "message": clipped(
                f"podmutate did not mutate this {finding.job_type} pod; it would change: {changes}", 1024
            ),
            "source": {"component": COMPONENT},
            "reportingComponent": f"podmutate.io/{COMPONENT}",
            "reportingInstance": self.holder[:128],
            "firstTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "lastTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "count": 1,
        }
        try:
            self.core.create_namespaced_event(finding.namespace, event)
        except ApiException as error:
            log.warning("safety net: %s: cannot create its Event: %s %s", where, error.status, error.reason)

    def recreate(self, finding: Finding, settings: Mapping[str, Any]) -> None:
        """Delete a Pending pod so that its controller makes it again, within the budget."""
        where = f"{finding.namespace}/{finding.name}"
        if finding.phase != "Pending" or not (finding.controller or settings["recreate_bare_pods"]):
            return
        if self._budget is None or not self._budget.take():
            log.warning(
                "safety net: %s left for now: %d deletions a minute at most",
                where,
                settings["max_deletions_per_minute"],
            )
            return
        try:
            self.core.delete_namespaced_pod(
                finding.name,
                finding.namespace,
                body={"preconditions": {"uid": finding.uid}},
                propagation_policy="Background",
            )
        except ApiException as error:
            if error.status not in (404, 409):
                log.warning("safety net: %s: cannot delete it: %s %s", where, error.status, error.reason)
            return
        made_by = finding.controller or "its creator"
        log.warning("safety net: deleted unmutated pod %s, for %s to make it again", where, made_by)
        with self._lock:
            self._recreated += 1
            self._unmutated.pop(finding.uid, None)


def following(engine: Engine, client: Any) -> SafetyNet:
    """A safety net that follows the configuration file `engine` was loaded from, as the workers do."""
    watcher = EngineWatcher(engine)
    watcher.watch()
    return SafetyNet(client, watcher.current)
