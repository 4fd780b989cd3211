"""Which job pods got through without podmutate: run the webhook on each pod as stored.

A mutated pod gives no patch (mutations are idempotent), so a pod that still would be changed
was admitted without podmutate — while it was down under `failurePolicy: Ignore`, or before its
namespace matched. What the API server defaults after admission and what later webhooks add
do not count: podmutate leaves what is there alone. A pod whose `podmutate.io/mutated-by`
names another configuration (or another podmutate) than the one in force is *stale*.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from webhook import admission
from webhook.admission import MUTATED_BY_POINTER
from webhook.contract import MUTATED_BY_ANNOTATION
from webhook.engine import Engine
from webhook.errors import Denied, ReviewError, clipped
from webhook.ops.doctor import calls_for_pod_create, selector_matches

MUTATED = "mutated"  # podmutate would change nothing, and named this configuration (or nothing)
UNMUTATED = "unmutated"  # podmutate would still change it
STALE = "stale"  # mutated by another configuration or version than the one in force
REFUSED = "refused"  # podmutate would deny it, or a plugin fails on it
STATES = (UNMUTATED, STALE, REFUSED, MUTATED)
PAGE = 100  # pods per list call


@dataclass(frozen=True)
class Finding:
    """One job pod and what podmutate makes of it as it is stored."""

    namespace: str
    name: str
    uid: str
    job_type: str
    state: str
    phase: str
    changes: list[str] = field(default_factory=list)  # the JSON pointers podmutate would change
    controller: str | None = None  # "Job/sync-42": the owner that recreates it, if any
    problem: str = ""  # why it would be refused

    def row(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "name": self.name,
            "jobType": self.job_type,
            "state": self.state,
            "phase": self.phase,
            "changes": self.changes,
            "controller": self.controller,
            **({"problem": self.problem} if self.problem else {}),
        }


def controller_of(pod: dict) -> str | None:
    """`Kind/name` of the pod's controller owner (a Job, a ReplicaSet...), or None for a bare pod."""
    for owner in (pod.get("metadata") or {}).get("ownerReferences") or []:
        if owner.get("controller"):
            return f"{owner.get('kind')}/{owner.get('name')}"
    return None


def assess(pod: dict, engine: Engine) -> Finding | None:
    """What podmutate makes of `pod` (API form, as stored); None when it is no job pod."""
    metadata = pod.get("metadata") or {}
    stored = Finding(
        namespace=metadata.get("namespace") or "",
        name=metadata.get("name") or "",
        uid=metadata.get("uid") or "",
        job_type="",
        state=MUTATED,
        phase=(pod.get("status") or {}).get("phase") or "",
        controller=controller_of(pod),
    )
    try:
        mutation = admission.mutate(pod, engine)
    except (Denied, admission.PluginError, ReviewError) as error:  # ReviewError: nested past what a copy takes
        got = getattr(error, "mutation", None)  # how far the plugins got, if they ran
        job_type = (got.job_type if got is not None else None) or ""
        return replace(stored, job_type=job_type, state=REFUSED, problem=str(error))
    if mutation.job_type is None:
        return None
    changes = [operation["path"] for operation in mutation.patch if operation["path"] != MUTATED_BY_POINTER]
    named = (metadata.get("annotations") or {}).get(MUTATED_BY_ANNOTATION)
    if named is not None and named != engine.mutated_by:
        state = STALE
    elif changes:
        state = UNMUTATED
    else:
        state = MUTATED
    return replace(stored, job_type=mutation.job_type, state=state, changes=changes)


def webhook_selectors(configuration: dict) -> list[tuple[dict | None, dict | None]]:
    """(namespaceSelector, objectSelector) of each webhook of a MutatingWebhookConfiguration (API
    form) that is called for pod creations."""
    return [
        (webhook.get("namespaceSelector"), webhook.get("objectSelector"))
        for webhook in configuration.get("webhooks") or []
        if calls_for_pod_create(webhook)
    ]


def matched(pod: dict, namespace_labels: dict[str, dict], selectors: Iterable[tuple[dict | None, dict | None]]) -> bool:
    """Whether one of the webhooks' selectors matches `pod` (and its namespace's labels)."""
    metadata = pod.get("metadata") or {}
    labels = namespace_labels.get(metadata.get("namespace") or "")
    return labels is not None and any(
        selector_matches(namespace_selector, labels) and selector_matches(object_selector, metadata.get("labels") or {})
        for namespace_selector, object_selector in selectors
    )


def stored_pods(client: Any, namespace: str | None = None) -> Iterator[dict]:
    """Every pod (API form) of `namespace`, or of the cluster, a page at a time, as plain JSON."""
    import kubernetes

    core = kubernetes.client.CoreV1Api(client)
    token = None
    while True:
        if namespace:
            answer = core.list_namespaced_pod(namespace, limit=PAGE, _continue=token, _preload_content=False)
        else:
            answer = core.list_pod_for_all_namespaces(limit=PAGE, _continue=token, _preload_content=False)
        page = orjson.loads(answer.data)
        yield from page.get("items") or []
        token = (page.get("metadata") or {}).get("continue")
        if not token:
            return


def audit(client: Any, engine: Engine, webhook_config: str, namespace: str | None = None) -> list[Finding]:
    """Every job pod the webhook configuration `webhook_config` matches (in `namespace`, else in every
    namespace), with what podmutate makes of it; raises ApiException when the API server refuses."""
    import kubernetes

    configuration = client.sanitize_for_serialization(
        kubernetes.client.AdmissionregistrationV1Api(client).read_mutating_webhook_configuration(webhook_config)
    )
    selectors = webhook_selectors(configuration)
    core = kubernetes.client.CoreV1Api(client)
    if namespace:
        namespace_labels = {namespace: core.read_namespace(namespace).metadata.labels or {}}
    else:
        namespace_labels = {item.metadata.name: item.metadata.labels or {} for item in core.list_namespace().items}
    findings = [
        finding
        for pod in stored_pods(client, namespace)
        if matched(pod, namespace_labels, selectors) and (finding := assess(pod, engine)) is not None
    ]
    return sorted(findings, key=lambda finding: (STATES.index(finding.state), finding.namespace, finding.name))


def table(findings: list[Finding]) -> str:
    """The findings as kubectl prints a table: one line per pod, what would change clipped."""
    headers = ("NAMESPACE", "NAME", "JOB TYPE", "PHASE", "STATE", "WOULD CHANGE")
    rows = [
        (
            finding.namespace,
            finding.name,
            finding.job_type,
            finding.phase,
            finding.state,
            clipped(", ".join(finding.changes) or finding.problem or "-", 100),
        )
        for finding in findings
    ]
    widths = [max(len(str(row[column])) for row in [headers, *rows]) for column in range(len(headers) - 1)]
    return "\n".join(
        "   ".join([*(str(cell).ljust(width) for cell, width in zip(row, widths, strict=False)), str(row[-1])])
        for row in [headers, *rows]
    )


def as_json(findings: list[Finding]) -> str:
    return json.dumps({"items": [finding.row() for finding in findings]}, indent=2)
