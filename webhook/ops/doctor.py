"""Preflight checks of a webhook configuration, live or rendered: the mistakes that take clusters down."""

from __future__ import annotations

import base64
import functools
import os
import socket
import ssl
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509

from certs import SERVING_RENEW_DAYS, now, service_host

BUDGET_SECONDS = 10  # the API server's budget for a request's whole admission chain
SAFE_SIDE_EFFECTS = ("None", "NoneOnDryRun")
NAME_LABEL = "kubernetes.io/metadata.name"
CA_INJECTION_ANNOTATION = "cert-manager.io/inject-ca-from"


@dataclass(frozen=True)
class Finding:
    level: str  # ok, warn or fail
    subject: str
    message: str

    def __str__(self) -> str:
        return f"{self.level:<5} {self.subject}: {self.message}"


def selector_matches(selector: dict | None, labels: dict) -> bool:
    """Whether a LabelSelector (dict, API form) selects an object with `labels`; None selects all."""
    selector = selector or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for requirement in selector.get("matchExpressions") or []:
        key, operator, values = requirement["key"], requirement["operator"], requirement.get("values") or []
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def requirements(selector: dict | None) -> dict:
    """Per label key, what a selector demands: {"in": set} / {"notin": set} / {"exists": bool}."""
    demands: dict[str, dict] = {}
    for key, value in ((selector or {}).get("matchLabels") or {}).items():
        demands.setdefault(key, {})["in"] = {value}
    for requirement in (selector or {}).get("matchExpressions") or []:
        demand = demands.setdefault(requirement["key"], {})
        operator, values = requirement["operator"], set(requirement.get("values") or [])
        if operator == "In":
            demand["in"] = demand.get("in", values) & values
        elif operator == "NotIn":
            demand["notin"] = demand.get("notin", set()) | values
        elif operator == "Exists":
            demand["exists"] = True
        elif operator == "DoesNotExist":
            demand["exists"] = False
    return demands


def disjoint(first: dict | None, second: dict | None) -> bool:
    """True when no object can be selected by both selectors."""
    a, b = requirements(first), requirements(second)
    for key in set(a) & set(b):
        x, y = a[key], b[key]
        needs_x = x.get("exists") or "in" in x
        needs_y = y.get("exists") or "in" in y
        if (needs_x and y.get("exists") is False) or (needs_y and x.get("exists") is False):
            return True
        if "in" in x and "in" in y and not x["in"] & y["in"]:
            return True
        if ("in" in x and x["in"] <= y.get("notin", set())) or ("in" in y and y["in"] <= x.get("notin", set())):
            return True
    return False


def exclusive(first: dict, second: dict) -> bool:
    """True when no pod can be sent to both webhooks."""
    return any(
        disjoint(first.get(selector), second.get(selector)) for selector in ("objectSelector", "namespaceSelector")
    )


def calls_for_pod_create(webhook: dict) -> bool:
    for rule in webhook.get("rules") or []:
        if not ({"pods", "*"} & set(rule.get("resources") or [])):
            continue
        if {"CREATE", "*"} & set(rule.get("operations") or []) and {"", "*"} & set(rule.get("apiGroups") or []):
            return True
    return False


def worst_case_seconds(webhooks: list[dict]) -> int:
    """The longest the mutating webhooks can take on one pod creation, re-invocations included.

    Webhooks whose object or namespace selectors exclude each other never run for the same
    pod, so the worst case is the heaviest set of webhooks that can all match one pod.
    """
    costs = [
        (webhook, webhook.get("timeoutSeconds", 10) * (2 if webhook.get("reinvocationPolicy") == "IfNeeded" else 1))
        for webhook in webhooks
        if calls_for_pod_create(webhook)
    ]
    # Webhooks that can meet one pod are linked: the worst case is the heaviest clique (Bron-Kerbosch;
    # selectors leave few links, so this is quick at any number of webhooks a cluster has).
    linked = {
        index: {
            other for other in range(len(costs)) if other != index and not exclusive(costs[index][0], costs[other][0])
        }
        for index in range(len(costs))
    }
    worst = 0

    def expand(clique: set[int], candidates: set[int], excluded: set[int]) -> None:
        nonlocal worst
        if not candidates and not excluded:
            worst = max(worst, sum(costs[index][1] for index in clique))
            return
        pivot = max(candidates | excluded, key=lambda index: len(linked[index] & candidates))
        for index in list(candidates - linked[pivot]):
            expand(clique | {index}, candidates & linked[index], excluded & linked[index])
            candidates = candidates - {index}
            excluded = excluded | {index}

    expand(set(), set(range(len(costs))), set())
    return worst


def check(
    configurations: list[dict],
    namespaces: dict[str, dict],
    *,
    name: str,
    own_namespace: str | None = None,
    url: str | None = None,
    reach: Reach | None = None,
    renew_days: int = SERVING_RENEW_DAYS,
) -> list[Finding]:
    """Findings for the MutatingWebhookConfiguration `name` among `configurations` (dicts).

    `namespaces` maps namespace names to their labels (the name label is implied). `url`
    overrides where to reach the webhook for the certificate check; without it, a Service's
    pods are reached each through `reach` (the API server's port-forward, in a live cluster).
    """
    target = next((item for item in configurations if item["metadata"]["name"] == name), None)
    if target is None:
        return [Finding("fail", name, "no such MutatingWebhookConfiguration")]
    findings = []
    for webhook in target.get("webhooks") or []:
        subject = f"{name}/{webhook['name']}"
        service = (webhook.get("clientConfig") or {}).get("service") or {}
        own = own_namespace or service.get("namespace")
        for namespace in ("kube-system", own):
            if namespace is None:
                continue
            labels = {**namespaces.get(namespace, {}), NAME_LABEL: namespace}
            if selector_matches(webhook.get("namespaceSelector"), labels):
                findings.append(
                    Finding(
                        "fail",
                        subject,
                        f"namespace {namespace} is not excluded: a webhook that is "
                        "down can then block the pods that would bring it back",
                    )
                )
            else:
                findings.append(Finding("ok", subject, f"namespace {namespace} is excluded"))
        side_effects = webhook.get("sideEffects")
        if side_effects in SAFE_SIDE_EFFECTS:
            findings.append(Finding("ok", subject, f"sideEffects {side_effects}: kubectl --dry-run=server works"))
        else:
            findings.append(
                Finding(
                    "fail",
                    subject,
                    f"sideEffects {side_effects}: the API server refuses "
                    '--dry-run=server requests ("does not support dry run")',
                )
            )
        if "v1" not in (webhook.get("admissionReviewVersions") or []):
            findings.append(
                Finding("fail", subject, "admissionReviewVersions lacks v1, the only one podmutate answers")
            )
        if webhook.get("objectSelector") and (
            webhook["objectSelector"].get("matchLabels") or webhook["objectSelector"].get("matchExpressions")
        ):
            findings.append(Finding("ok", subject, "objectSelector present: other pods never reach the webhook"))
        else:
            findings.append(Finding("warn", subject, "no objectSelector: every pod creation calls the webhook"))
        findings += check_ca_bundle(target, webhook, subject, url, renew_days, reach)
    all_webhooks = [webhook for item in configurations for webhook in item.get("webhooks") or []]
    worst = worst_case_seconds(all_webhooks)
    if worst > BUDGET_SECONDS:
        findings.append(
            Finding(
                "fail",
                "mutating webhooks",
                f"up to {worst}s on one pod creation (timeouts, "
                f"re-invocations counted): more than the API server's {BUDGET_SECONDS}s",
            )
        )
    else:
        findings.append(
            Finding("ok", "mutating webhooks", f"at most {worst}s on one pod creation, within {BUDGET_SECONDS}s")
        )
    return findings


def check_ca_bundle(
    configuration: dict, webhook: dict, subject: str, url: str | None, renew_days: int, reach: Reach | None = None
) -> list[Finding]:
    client_config = webhook.get("clientConfig") or {}
    encoded = client_config.get("caBundle") or ""
    if not encoded:
        if CA_INJECTION_ANNOTATION in ((configuration.get("metadata") or {}).get("annotations") or {}):
            return [Finding("ok", subject, "caBundle left to cert-manager's cainjector")]
        return [
            Finding(
                "warn",
                subject,
                "caBundle empty: `podmutate serve --webhook-config` or `podmutate certs inject` must fill it",
            )
        ]
    try:
        bundle = base64.b64decode(encoded)
        x509.load_pem_x509_certificates(bundle)
    except ValueError:
        return [Finding("fail", subject, "caBundle is not a base64 PEM bundle")]
    service = client_config.get("service")
    target = url or client_config.get("url")
    if not target:
        if not (service and reach):
            return [Finding("warn", subject, "serving certificate not checked: pass --url to reach the Service")]
        hostname = service_host(service["name"], service["namespace"])
        try:
            pods = reach(service)
        except OSError as error:
            return [
                Finding("warn", subject, f"the Service's pods not reached, serving certificate not checked: {error}")
            ]
        if not pods:
            return [Finding("fail", subject, f"Service {service['namespace']}/{service['name']} has no running pod")]
        return [served_finding(subject, f"pod {pod}", connect, hostname, bundle, renew_days) for pod, connect in pods]
    parts = urlsplit(target)
    hostname = service_host(service["name"], service["namespace"]) if service else parts.hostname or ""
    connect = lambda: socket.create_connection((parts.hostname or "", parts.port or 443), timeout=5)  # noqa: E731
    return [served_finding(subject, target, connect, hostname, bundle, renew_days)]


def served_finding(
    subject: str, where: str, connect: Callable[[], socket.socket], hostname: str, bundle: bytes, renew_days: int
) -> Finding:
    """Whether `bundle` verifies the certificate served over `connect()`, and how long it has left."""
    try:
        served = served_certificate(connect, hostname, bundle)
    except ssl.SSLCertVerificationError as error:
        return Finding(
            "fail", subject, f"caBundle does not verify the certificate served at {where}: {error.verify_message}"
        )
    except OSError as error:
        return Finding("warn", subject, f"{where} not reachable, serving certificate not checked: {error}")
    days = (served.not_valid_after_utc - now()).total_seconds() / 86400
    if days <= renew_days:
        return Finding(
            "warn",
            subject,
            f"caBundle verifies the certificate served at {where}, which expires in {days:.0f} "
            f"days (renewal is due {renew_days} days before)",
        )
    return Finding("ok", subject, f"caBundle verifies the certificate served at {where} ({days:.0f} days left)")


def served_certificate(connect: Callable[[], socket.socket], hostname: str, bundle: bytes) -> x509.Certificate:
    """Handshake over `connect()`, verifying against `bundle`; return the certificate served."""
    with tempfile.NamedTemporaryFile(suffix=".crt") as ca_file:
        ca_file.write(bundle)
        ca_file.flush()
        context = ssl.create_default_context(cafile=ca_file.name)
    with connect() as raw:
        raw.settimeout(10)
        with context.wrap_socket(raw, server_hostname=hostname) as tls:
            return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True) or b"")


# For a Service's pods: (pod name, a function that opens a socket to its webhook port).
Reach = Callable[[dict], list[tuple[str, Callable[[], socket.socket]]]]


def through_port_forwards(client: Any) -> Reach:
    """Reach each running pod behind a Service through the API server's port-forward (what
    `kubectl port-forward` uses): doctor run outside the cluster still sees each replica's
    certificate. Needs `create pods/portforward` in podmutate's namespace."""
    import kubernetes
    from kubernetes.stream import portforward

    core = kubernetes.client.CoreV1Api(client)

    def reach(service: dict) -> list[tuple[str, Callable[[], socket.socket]]]:
        try:
            found = core.read_namespaced_service(service["name"], service["namespace"])
            ports = [port for port in found.spec.ports or [] if port.port == service.get("port", 443)]
            selector = ",".join(f"{key}={value}" for key, value in (found.spec.selector or {}).items())
            pods = core.list_namespaced_pod(service["namespace"], label_selector=selector).items
        except kubernetes.client.exceptions.ApiException as error:
            raise OSError(f"{error.status} {error.reason}") from None
        running = [pod for pod in pods if pod.status.phase == "Running" and pod.metadata.deletion_timestamp is None]
        reached: list[tuple[str, Callable[[], socket.socket]]] = []
        for pod in running:
            target = ports[0].target_port if ports else 8443
            if isinstance(target, str):  # a named port: the container's of that name
                named = [p for c in pod.spec.containers for p in c.ports or [] if p.name == target]
                target = named[0].container_port if named else 8443

            def connect(name: str, port: int) -> socket.socket:
                try:
                    forward = portforward(
                        core.connect_get_namespaced_pod_portforward, name, service["namespace"], ports=str(port)
                    )
                except kubernetes.client.exceptions.ApiException as error:
                    raise OSError(f"port-forward to {name}: {error.status} {error.reason}") from None
                # A real socket on the same descriptor (the client's wrapper is none, and TLS
                # needs one); the forward's own half goes with the command's end.
                return socket.socket(fileno=os.dup(forward.socket(port).fileno()))

            reached.append((pod.metadata.name, functools.partial(connect, pod.metadata.name, int(target))))
        return reached

    return reach


def from_documents(documents: list[Any]) -> tuple[list[dict], dict[str, dict]]:
    """(configurations, namespaces) from rendered manifests."""
    configurations = [
        doc for doc in documents if isinstance(doc, dict) and doc.get("kind") == "MutatingWebhookConfiguration"
    ]
    namespaces = {
        doc["metadata"]["name"]: doc["metadata"].get("labels") or {}
        for doc in documents
        if isinstance(doc, dict) and doc.get("kind") == "Namespace"
    }
    return configurations, namespaces


def from_cluster(client: Any) -> tuple[list[dict], dict[str, dict]]:
    """(configurations, namespaces) read from a live cluster."""
    import kubernetes

    serialize = client.sanitize_for_serialization
    admission = kubernetes.client.AdmissionregistrationV1Api(client)
    configurations = [serialize(item) for item in admission.list_mutating_webhook_configuration().items]
    core = kubernetes.client.CoreV1Api(client)
    namespaces = {item.metadata.name: item.metadata.labels or {} for item in core.list_namespace().items}
    return configurations, namespaces


def service_namespaces(configurations: list[dict], name: str) -> list[str]:
    """The namespaces of the Services the webhook configuration `name` calls."""
    return [
        webhook["clientConfig"]["service"]["namespace"]
        for item in configurations
        if item["metadata"]["name"] == name
        for webhook in item.get("webhooks") or []
        if (webhook.get("clientConfig") or {}).get("service")
    ]


def safety_net_findings(client: Any, namespace: str, lease: str = "podmutate-safety-net") -> list[Finding]:
    """The safety net's state in a live cluster: who holds its Lease (and whether it renews it),
    and the job pods it told of as unmutated (their NotMutated Events)."""
    import datetime

    import kubernetes

    subject = "safety net"
    try:
        held = kubernetes.client.CoordinationV1Api(client).read_namespaced_lease(lease, namespace).spec
    except kubernetes.client.exceptions.ApiException as error:
        if error.status != 404:
            return [Finding("warn", subject, f"Lease {namespace}/{lease} not read: {error.status} {error.reason}")]
        return [Finding("warn", subject, f"no Lease {namespace}/{lease}: the safety net is off (safety_net.enabled)")]
    findings = []
    renewed = held.renew_time or held.acquire_time
    age = (datetime.datetime.now(datetime.UTC) - renewed).total_seconds() if renewed else None
    if held.holder_identity and age is not None and age <= (held.lease_duration_seconds or 15):
        findings.append(Finding("ok", subject, f"led by {held.holder_identity} (renewed {age:.0f}s ago)"))
    else:
        findings.append(Finding("warn", subject, f"no replica holds Lease {namespace}/{lease}: nobody watches"))
    try:
        events = kubernetes.client.CoreV1Api(client).list_event_for_all_namespaces(field_selector="reason=NotMutated")
    except kubernetes.client.exceptions.ApiException as error:
        return [*findings, Finding("warn", subject, f"NotMutated Events not read: {error.status} {error.reason}")]
    told = sorted({f"{event.involved_object.namespace}/{event.involved_object.name}" for event in events.items})
    if told:
        shown = ", ".join(told[:10]) + (f" and {len(told) - 10} more" if len(told) > 10 else "")
        findings.append(Finding("warn", subject, f"{len(told)} job pods got through unmutated: {shown}"))
    else:
        findings.append(Finding("ok", subject, "no job pod told of as unmutated"))
    return findings
