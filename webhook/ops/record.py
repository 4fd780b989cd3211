"""Real traffic, kept and replayed: what a configuration change will do to the pods the cluster creates.

`serve`, with `record.enabled`, keeps the last `per_job_type` AdmissionReview requests of each
job type in `record.directory` (files 0600 in a directory 0700, on podmutate's own pod: no pod
creator reads them), at most `max_bytes_per_job_type` each and `max_bytes` in all, written by a
thread of the worker off the review's path. What is not needed to mutate is redacted before anything is written:
env values (but the connection ids podmutate reads), secret and ConfigMap references,
commands and arguments, the user, kubectl's last-applied annotation, managed fields.

`podmutate record export` copies them out (a directory, or a tar on standard output for
`kubectl exec`); `podmutate replay` runs them through the configuration in force and a
candidate, and says, per job type, how many pods change and how, and which pods the candidate
would deny, fail, or make invalid (the validity guard had to drop a plugin's change).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import logging
import os
import queue
import re
import tarfile
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from webhook import admission
from webhook.admission import MUTATED_BY_POINTER, Answer
from webhook.contract import CONNECTION_IDS
from webhook.engine import Engine
from webhook.errors import clipped
from webhook.files import write_atomically
from webhook.patch import diff
from webhook.wire import DENIED, FAILED

log = logging.getLogger(__name__)

REDACTED = "<redacted>"
KEPT_ENV = frozenset(env for _annotation, env in CONNECTION_IDS.values())  # what connection_labels reads
CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")
DROPPED_ANNOTATIONS = ("kubectl.kubernetes.io/last-applied-configuration",)
QUEUED = 4  # recordings waiting for the writer thread; more are dropped, never waited for
LARGEST = 1024 * 1024  # a larger recording is not kept: the queue holds at most QUEUED of these
GUARD_WARNING = "the API server would refuse the result"  # admission.mutate_validly's words
SUFFIX = ".json"


def redact(admission_review: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the review with only what podmutate needs to mutate the pod (see the module)."""
    request = dict(admission_review.get("request") or {})
    request["userInfo"] = {"username": REDACTED}
    request.pop("oldObject", None)
    pod: dict = copy.deepcopy(request.get("object") or {})
    metadata: dict = pod["metadata"] if isinstance(pod.get("metadata"), dict) else {}
    metadata.pop("managedFields", None)
    annotations = metadata.get("annotations")
    if isinstance(annotations, dict):
        for name in DROPPED_ANNOTATIONS:
            annotations.pop(name, None)
    pod.pop("status", None)
    spec: dict = pod["spec"] if isinstance(pod.get("spec"), dict) else {}
    for field_name in CONTAINER_LISTS:
        for container in spec.get(field_name) or []:
            if isinstance(container, dict):
                redact_container(container)
    for volume in spec.get("volumes") or []:
        if isinstance(volume, dict):
            redact_volume(volume)
    request["object"] = pod
    return {"apiVersion": admission_review.get("apiVersion"), "kind": admission_review.get("kind"), "request": request}


def redact_container(container: dict) -> None:
    for key in ("command", "args"):
        if isinstance(container.get(key), list):
            container[key] = [REDACTED for _ in container[key]]
    for variable in container.get("env") or []:
        if not isinstance(variable, dict):
            continue
        if "value" in variable and variable.get("name") not in KEPT_ENV:
            variable["value"] = REDACTED
        source = variable.get("valueFrom")
        if isinstance(source, dict):
            for reference in ("secretKeyRef", "configMapKeyRef"):
                if isinstance(source.get(reference), dict):
                    source[reference] = {"name": REDACTED, "key": REDACTED}
    for source in container.get("envFrom") or []:
        if isinstance(source, dict):
            for reference in ("secretRef", "configMapRef"):
                if isinstance(source.get(reference), dict):
                    source[reference] = {"name": REDACTED}


def redact_volume(volume: dict) -> None:
    if isinstance(volume.get("secret"), dict):
        volume["secret"] = {"secretName": REDACTED}
    projected = volume.get("projected")
    if isinstance(projected, dict):
        for source in projected.get("sources") or []:
            if isinstance(source, dict) and isinstance(source.get("secret"), dict):
                source["secret"] = {"name": REDACTED}


def job_type_directory(job_type: str) -> str:
    """A directory name for a job type: itself when it is a plain name, else a digest of it."""
    if re.fullmatch(r"[a-z0-9][a-z0-9-]{0,62}", job_type):
        return job_type
    return "type-" + hashlib.sha256(job_type.encode()).hexdigest()[:12]


class Recorder:
    """Keeps reviews for `podmutate replay`, as `record` in the configuration says (read per review)."""

    def __init__(self) -> None:
        self._queue: queue.Queue[tuple[Mapping[str, Any], str, bytes]] = queue.Queue(QUEUED)
        self._writer: threading.Thread | None = None
        self._lock = threading.Lock()

    def keep(self, engine: Engine, admission_review: Mapping[str, Any], job_type: str) -> None:
        """Redact and queue one review of a job pod; dropped when the writer is behind or it is too large."""
        settings = engine.config.record
        if not settings["enabled"]:
            return
        data = orjson.dumps(redact(admission_review))
        if len(data) > min(LARGEST, settings["max_bytes_per_job_type"]):
            return
        with self._lock:
            if self._writer is None:
                self._writer = threading.Thread(target=self._write_forever, name="podmutate-record", daemon=True)
                self._writer.start()
        try:
            self._queue.put_nowait((settings, job_type, data))
        except queue.Full:
            log.debug("record: the writer is behind; a %s review was not kept", job_type)

    def _write_forever(self) -> None:
        while True:
            settings, job_type, data = self._queue.get()
            try:
                write(settings, job_type, data)
            except OSError as error:
                log.warning("record: cannot keep a %s review in %s: %s", job_type, recording_directory(settings), error)


def recording_directory(settings: Mapping[str, Any]) -> str:
    """Where the reviews are kept: `record.directory`, else podmutate-recorded under the temporary directory."""
    return settings["directory"] or os.path.join(tempfile.gettempdir(), "podmutate-recorded")


def write(settings: Mapping[str, Any], job_type: str, data: bytes) -> None:
    """Write one redacted review, then keep only the newest within the count and byte bounds."""
    top = recording_directory(settings)
    directory = os.path.join(top, job_type_directory(job_type))
    for private in (top, directory):  # makedirs' mode is the last one's alone
        os.makedirs(private, mode=0o700, exist_ok=True)
    name = f"{time.time_ns():020d}-{os.getpid()}{SUFFIX}"
    write_atomically(os.path.join(directory, name), data, mode=0o600)
    prune(directory, settings["per_job_type"], settings["max_bytes_per_job_type"])
    prune_all(recording_directory(settings), settings["max_bytes"])


def prune(directory: str, count: int, max_bytes: int) -> None:
    """Remove the oldest recordings past `count` or past `max_bytes` in all (workers race: tolerated)."""
    names = sorted((name for name in os.listdir(directory) if name.endswith(SUFFIX)), reverse=True)
    total = 0
    for index, name in enumerate(names):
        path = os.path.join(directory, name)
        try:
            total += os.path.getsize(path)
            if index >= count or total > max_bytes:
                os.remove(path)
        except FileNotFoundError:
            continue


def prune_all(directory: str, max_bytes: int) -> None:
    """Remove the oldest recordings of any job type while all of them weigh more than `max_bytes`."""
    files = []
    for job_type in os.listdir(directory):
        folder = os.path.join(directory, job_type)
        for name in os.listdir(folder) if os.path.isdir(folder) else []:
            if name.endswith(SUFFIX):
                try:
                    files.append((name, os.path.join(folder, name), os.path.getsize(os.path.join(folder, name))))
                except FileNotFoundError:
                    continue
    total = sum(size for _name, _path, size in files)
    for _name, path, size in sorted(files):  # names start with the time they were written
        if total <= max_bytes:
            return
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
        total -= size


def recorded_files(directory: str) -> Iterator[tuple[str, bytes]]:
    """(path relative to `directory`, content) of every recording in it, oldest first per job type."""
    for job_type in sorted(os.listdir(directory)):
        folder = os.path.join(directory, job_type)
        if not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            if name.endswith(SUFFIX):
                try:
                    with open(os.path.join(folder, name), "rb") as stream:
                        yield f"{job_type}/{name}", stream.read()
                except FileNotFoundError:
                    continue  # pruned meanwhile


def export_tar(directory: str) -> bytes:
    """Every recording in `directory` as a tar archive (what `record export -o -` writes)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, content in recorded_files(directory):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(content), 0o600
            archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def export_directory(directory: str, target: str) -> int:
    """Copy every recording of `directory` into `target` (made 0700); return how many."""
    count = 0
    for name, content in recorded_files(directory):
        path = os.path.join(target, name)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        write_atomically(path, content, mode=0o600)
        count += 1
    return count


def load_recorded(sources: Iterable[str]) -> list[tuple[str, dict]]:
    """(name, review) of every recording in `sources`: directories as exported, or tar archives."""
    found: list[tuple[str, dict]] = []
    for source in sources:
        if os.path.isdir(source):
            entries: Iterable[tuple[str, bytes]] = recorded_files(source)
        else:
            with tarfile.open(source) as archive:
                entries = [
                    (member.name, archive.extractfile(member).read())  # type: ignore[union-attr]
                    for member in archive.getmembers()
                    if member.isfile() and member.name.endswith(SUFFIX)
                ]
        for name, content in entries:
            try:
                review = orjson.loads(content)
            except orjson.JSONDecodeError as error:
                raise ValueError(f"{source}: {name} is not JSON: {error}") from None
            found.append((name, review))
    return found


@dataclass
class Replayed:
    """What the candidate does to one recorded pod, beside the configuration in force."""

    name: str
    job_type: str
    changes: list[tuple[str, Any, Any]] = field(default_factory=list)  # (path, in force, candidate)
    problem: str = ""  # why the candidate denies, fails or had to keep a change out


@dataclass
class Report:
    replayed: list[Replayed]

    @property
    def problems(self) -> list[Replayed]:
        return [item for item in self.replayed if item.problem]

    def lines(self, most: int = 10) -> list[str]:
        """Per job type: how many pods, how many change and how; then every problem."""
        by_type: dict[str, list[Replayed]] = defaultdict(list)
        for item in self.replayed:
            by_type[item.job_type].append(item)
        lines = []
        for job_type in sorted(by_type):
            items = by_type[job_type]
            changed = [item for item in items if item.changes]
            lines.append(f"{job_type}: {len(items)} pods, {len(changed)} change")
            how = Counter((path, shown(old), shown(new)) for item in changed for path, old, new in item.changes)
            for (path, old, new), count in how.most_common(most):
                lines.append(f"  {path}: {old} -> {new} ({count} pods)")
            if len(how) > most:
                lines.append(f"  ... and {len(how) - most} other changes")
        for item in self.problems:
            lines.append(f"PROBLEM {item.name} ({item.job_type}): {item.problem}")
        return lines


def shown(value: Any) -> str:
    if value is ABSENT:
        return "(absent)"
    return clipped(orjson.dumps(value).decode(), 80)


ABSENT = object()


def at(document: Any, pointer: str) -> Any:
    """The value at a JSON pointer, or ABSENT."""
    for token in pointer.split("/")[1:]:
        token = token.replace("~1", "/").replace("~0", "~")
        if isinstance(document, dict) and token in document:
            document = document[token]
        elif isinstance(document, list) and token.isdigit() and int(token) < len(document):
            document = document[int(token)]
        else:
            return ABSENT
    return document


def outcome(review: dict, engine: Engine) -> tuple[Answer, dict]:
    """The answer of `engine` to a recorded review, and the pod as it would be stored."""
    answer = admission.answer(review, engine)  # which leaves the review as it was
    pod = review["request"]["object"]
    if answer.mutation is not None and answer.outcome not in (DENIED, FAILED):
        pod = answer.mutation.pod
    return answer, pod


def replay(recorded: list[tuple[str, dict]], current: Engine, candidate: Engine) -> Report:
    """Each recorded review through both engines, compared."""
    replayed = []
    for name, review in recorded:
        before, pod_before = outcome(review, current)
        after, pod_after = outcome(review, candidate)
        job_type = (after.mutation.job_type if after.mutation else None) or "(not a job pod)"
        item = Replayed(name, job_type)
        for operation in diff(pod_before, pod_after):
            path = operation["path"]
            if path != MUTATED_BY_POINTER:  # names the configuration: it differs whenever that does
                item.changes.append((path, at(pod_before, path), at(pod_after, path)))
        if after.outcome in (DENIED, FAILED) and before.outcome != after.outcome:
            item.problem = f"the candidate {'denies' if after.outcome == DENIED else 'fails'} it: {after.message}"
        else:
            guarded = [w for w in after.request.warnings if GUARD_WARNING in w and w not in before.request.warnings]
            if guarded:
                item.problem = f"the candidate would make it invalid: {guarded[0]}"
        replayed.append(item)
    return Report(replayed)
