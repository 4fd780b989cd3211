"""The AdmissionReview wire format: what a review holds, reading and checking one, and the answer.

Below the hook specifications and the admission core, which both speak it; it knows nothing of
plugins, configuration or metrics. The outcome names are the core's, counted by webhook.metrics.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

import orjson

from webhook.errors import ReviewError

API_VERSION = "admission.k8s.io/v1"
KIND = "AdmissionReview"
POD_RESOURCE = ("", "v1", "pods")


# What became of a review: the `outcome` of webhook.metrics' counters and of the review's log line.
MUTATED, UNCHANGED, DENIED, FAILED, BAD_REQUEST = "mutated", "unchanged", "denied", "failed", "bad_request"
NO_JOB_TYPE = ""  # the job type of a review whose pod is no job pod, or that never got as far


@dataclass
class AdmissionRequest:
    """What plugins may know of the request besides the pod, and where they leave warnings."""

    uid: str = ""
    namespace: str = ""
    name: str = ""
    operation: str = "CREATE"
    dry_run: bool = False
    user_info: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)
    sources: dict | None = None  # JSON pointer -> where its value came from, when explaining (mutate --explain)
    _warned: set = field(default_factory=set, repr=False, compare=False)

    def warn(self, message: str) -> None:
        """Add a warning the API server shows to whoever created the pod (kubectl prints it); once each."""
        message = str(message)  # whatever a plugin passed: the answer must serialise
        if message not in self._warned:  # a set: a crafted pod's thousands of warnings stay linear
            self._warned.add(message)
            self.warnings.append(message)

    def explain(self, pointer: str, source: str) -> None:
        """Say where the value a plugin writes at `pointer` (a JSON pointer) came from: a setting, a
        profile, an environment variable. Shown by `podmutate mutate --explain`; free otherwise."""
        if self.sources is not None:
            self.sources.setdefault(pointer, source)


def parse_review(admission_review: Any) -> tuple[AdmissionRequest, dict | None]:
    """The request of an AdmissionReview, and the pod to mutate (None unless the review is a pod's create).

    The one reader of AdmissionReviews, for the server and the offline CLI alike. Raises
    ReviewError naming what is wrong when the body is not a v1 AdmissionReview podmutate can answer.
    """
    request_body = check_review(admission_review)
    pod = request_body.get("object")
    metadata = (pod.get("metadata") if isinstance(pod, dict) else None) or {}
    request = AdmissionRequest(
        uid=request_body["uid"],
        namespace=request_body.get("namespace") or metadata.get("namespace") or "",
        name=request_body.get("name") or metadata.get("name") or metadata.get("generateName") or "",
        operation=request_body["operation"],
        dry_run=bool(request_body.get("dryRun")),
        user_info=request_body.get("userInfo") or {},
    )
    if not is_pod_create(request_body):
        return request, None
    if not isinstance(pod, dict):
        raise ReviewError("request.object: expected the Pod being created, as an object")
    return request, pod


def response(
    uid: str,
    *,
    allowed: bool = True,
    patch: list | None = None,
    warnings: Any = (),
    message: str | None = None,
    code: int | None = None,
    audit: dict[str, str] | None = None,
) -> dict:
    """Build an AdmissionReview response; a patch is sent only when it changes something.

    `audit` goes to auditAnnotations: the API server's audit log records each as
    ``<webhook name>/<key>``.
    """
    answer: dict[str, Any] = {"uid": uid, "allowed": allowed}
    if patch:
        answer["patchType"] = "JSONPatch"
        answer["patch"] = base64.b64encode(orjson.dumps(patch)).decode()
    if warnings:
        answer["warnings"] = list(warnings)
    if audit:
        answer["auditAnnotations"] = audit
    if not allowed:
        answer["status"] = {"code": code, "message": message, "reason": "Forbidden" if code == 403 else "InternalError"}
    return {"apiVersion": API_VERSION, "kind": KIND, "response": answer}


def encode(review_response: dict) -> bytes:
    """The JSON bytes of an AdmissionReview response (as `response` builds it).

    The base64 patch is spliced in rather than given to orjson, which reserves room for every
    character of a string to need escaping, and keeps it: a 6 MiB patch would cost 60 MiB.
    Base64 needs no escaping, and the uid before it cannot hold an unescaped quote.
    """
    answer = review_response["response"]
    if "patch" not in answer:
        return orjson.dumps(review_response)
    emptied = orjson.dumps({**review_response, "response": {**answer, "patch": ""}})
    return emptied.replace(b'"patch":""', b'"patch":"' + answer["patch"].encode() + b'"', 1)


def is_pod_create(request_body: dict) -> bool:
    resource = request_body["resource"]
    return (
        request_body["operation"] == "CREATE"
        and not request_body.get("subResource")
        and (resource.get("group"), resource.get("version"), resource.get("resource")) == POD_RESOURCE
    )


# The fields podmutate reads, with the type each must have when present.
REQUEST_FIELDS: dict[str, type | tuple[type, ...]] = {
    "uid": str,
    "kind": dict,
    "resource": dict,
    "subResource": str,
    "operation": str,
    "namespace": str,
    "name": str,
    "dryRun": bool,
    "userInfo": dict,
    "object": (dict, type(None)),
    "oldObject": (dict, type(None)),
    "options": (dict, type(None)),
}
REQUIRED_REQUEST_FIELDS = ("uid", "resource", "operation")
TYPE_NAMES: dict[type | tuple[type, ...], str] = {str: "a string", dict: "an object", bool: "a boolean"}


def check_review(admission_review: Any) -> dict:
    """Return the `request` of a v1 AdmissionReview, or raise ReviewError naming what is wrong."""
    if not isinstance(admission_review, dict):
        raise ReviewError(f"expected an AdmissionReview object, got {json_type(admission_review)}")
    api_version = admission_review.get("apiVersion")
    if api_version != API_VERSION:
        raise ReviewError(f"apiVersion: {api_version!r} is not supported: expected {API_VERSION!r}")
    if admission_review.get("kind") != KIND:
        raise ReviewError(f"kind: {admission_review.get('kind')!r}: expected {KIND!r}")
    request_body = admission_review.get("request")
    if not isinstance(request_body, dict):
        raise ReviewError(f"request: expected an object, got {json_type(request_body)}")
    for name in REQUIRED_REQUEST_FIELDS:
        if name not in request_body:
            raise ReviewError(f"request.{name} is missing")
    for name, expected in REQUEST_FIELDS.items():
        if name in request_body and not isinstance(request_body[name], expected):
            wanted = TYPE_NAMES.get(expected) or "an object or null"
            raise ReviewError(f"request.{name}: expected {wanted}, got {json_type(request_body[name])}")
    if not request_body["uid"]:
        raise ReviewError("request.uid is empty")
    for name in ("kind", "resource"):
        for key, value in request_body.get(name, {}).items():
            if not isinstance(value, str):
                raise ReviewError(f"request.{name}.{key}: expected a string, got {json_type(value)}")
    check_object_shape(request_body.get("object"))
    return request_body


def check_object_shape(pod: Any) -> None:
    """The parts of the object every plugin reads must be objects (or absent): else a 400, never a 500."""
    if not isinstance(pod, dict):
        return
    for name in ("metadata", "spec"):
        if pod.get(name) is not None and not isinstance(pod[name], dict):
            raise ReviewError(f"request.object.{name}: expected an object, got {json_type(pod[name])}")
    metadata = pod.get("metadata") or {}
    for name in ("labels", "annotations"):
        if metadata.get(name) is not None and not isinstance(metadata[name], dict):
            raise ReviewError(f"request.object.metadata.{name}: expected an object, got {json_type(metadata[name])}")


def json_type(value: Any, *, yaml: bool = False) -> str:
    """The JSON name of a parsed value's type, for error messages; with `yaml`, YAML's names for
    an object and an array (a mapping, a list), for files people write in YAML."""
    kind = type(value)
    if yaml and kind in (dict, list):
        return "a mapping" if kind is dict else "a list"
    names = {
        dict: "an object",
        list: "an array",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        type(None): "null",
    }
    return names.get(kind, kind.__name__)
