"""The admission core: an AdmissionReview dict in, the response dict out, no web framework."""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
import pluggy

from webhook.errors import Denied, ReviewError
from webhook.patch import copy, diff
from webhook.validity import problems

if TYPE_CHECKING:
    from webhook.config import Config
    from webhook.engine import Engine

log = logging.getLogger(__name__)

API_VERSION = "admission.k8s.io/v1"
KIND = "AdmissionReview"
POD_RESOURCE = ("", "v1", "pods")


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
        if message not in self._warned:  # a set: a crafted pod's thousands of warnings stay linear
            self._warned.add(message)
            self.warnings.append(message)

    def explain(self, pointer: str, source: str) -> None:
        """Say where the value a plugin writes at `pointer` (a JSON pointer) came from: a setting, a
        profile, an environment variable. Shown by `podmutate mutate --explain`; free otherwise."""
        if self.sources is not None:
            self.sources.setdefault(pointer, source)


@dataclass
class Mutation:
    """The outcome of running the plugins on one pod."""

    job_type: str | None
    pod: dict
    patch: list
    warnings: list
    original: dict = field(default_factory=dict, repr=False)  # the pod as it came


class PluginError(Exception):
    """A plugin raised while classifying or mutating; names the plugin."""

    def __init__(self, plugin: str, error: BaseException) -> None:
        self.plugin = plugin
        self.error = error
        super().__init__(f"plugin {plugin!r} failed: {type(error).__name__}: {error}")


def mutate(pod: dict, engine: Engine, request: AdmissionRequest | None = None) -> Mutation:
    """Classify `pod` and run every enabled plugin on a deep copy of it; `pod` is left untouched.

    Returns a Mutation whose patch is the RFC 6902 diff of the copy against `pod`. Raises
    Denied when a plugin refuses the pod, and PluginError when one raises anything else: the
    copy is then thrown away whole, so a failure never yields half a patch.
    """
    request = request or AdmissionRequest(namespace=(pod.get("metadata") or {}).get("namespace") or "")
    hook, config = engine.plugins.hook, engine.config
    try:
        job_type = hook.classify_pod(pod=pod, namespace=request.namespace, config=config)
        if job_type is None:
            return Mutation(job_type=None, pod=pod, patch=[], warnings=list(request.warnings), original=pod)
        mutated = copy(pod)
        hook.mutate_pod(pod=mutated, job_type=job_type, config=config, request=request)
        found = problems(mutated)  # almost always empty: then the original need not be checked
        if found and found - problems(pod):
            mutated = mutate_validly(pod, job_type, engine, request)
    except Denied:
        raise
    except Exception as error:
        raise PluginError(blame(engine.plugins, error), error) from error
    patch = diff(pod, mutated)
    return Mutation(job_type=job_type, pod=mutated, patch=patch, warnings=list(request.warnings), original=pod)


def one_plugin_at_a_time(pm: pluggy.PluginManager) -> list[tuple[str, Any]]:
    """(name, hook caller of that plugin alone) for every mutate_pod implementation, in calling order."""
    impls = pm.hook.mutate_pod.get_hookimpls()
    return [
        (
            impl.plugin_name,
            pm.subset_hook_caller("mutate_pod", remove_plugins=[other.plugin for other in impls if other is not impl]),
        )
        for impl in reversed(impls)
    ]  # pluggy calls the last registered first


def mutate_validly(pod: dict, job_type: str, engine: Engine, request: AdmissionRequest) -> dict:
    """Run the plugins one at a time, in their usual order, undoing any whose change the API
    server would refuse (with a warning naming it), so that a valid pod never comes back invalid."""
    baseline = problems(pod)
    mutated = copy(pod)
    for name, mutate_alone in one_plugin_at_a_time(engine.plugins):
        trial = copy(mutated)
        mutate_alone(pod=trial, job_type=job_type, config=engine.config, request=request)
        introduced = problems(trial) - baseline
        if introduced:
            request.warn(
                f"podmutate: {name} made no change: the API server would refuse the result ({sorted(introduced)[0]})"
            )
        else:
            mutated = trial
    return mutated


def hook_owners(pm: pluggy.PluginManager) -> dict:
    """The code object of every classify and mutate hook implementation -> its plugin's name."""
    return {
        impl.function.__code__: impl.plugin_name
        for caller in (pm.hook.classify_pod, pm.hook.mutate_pod)
        for impl in caller.get_hookimpls()
    }


def blame(pm: pluggy.PluginManager, error: BaseException) -> str:
    """Name the plugin whose hook implementation raised `error`, from the traceback."""
    owners = hook_owners(pm)
    culprit = "unknown"
    traceback = error.__traceback__
    while traceback is not None:
        culprit = owners.get(traceback.tb_frame.f_code, culprit)
        traceback = traceback.tb_next
    return culprit


def plugin_at(pm: pluggy.PluginManager, frame: Any) -> str:
    """Name the plugin a thread is in, from its innermost frame; "the review" when in none."""
    owners = hook_owners(pm)
    while frame is not None:
        if frame.f_code in owners:
            return f"plugin {owners[frame.f_code]!r}"
        frame = frame.f_back
    return "the review"


def overrun_response(admission_review: dict, config: Config, overrun: Any) -> dict:
    """The answer to a review whose plugins overran the budget: by `failure_mode`, with a warning."""
    uid = admission_review["request"]["uid"]
    message = f"podmutate: {overrun.where} did not finish within {overrun.seconds:g}s"
    if config.failure_mode == "fail":
        return response(uid, allowed=False, message=message, code=500)
    return response(uid, warnings=[f"{message}; the pod was admitted unmutated"])


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


def review(admission_review: Any, engine: Engine) -> dict:
    """Answer one AdmissionReview (a dict) with the AdmissionReview response dict.

    Raises ReviewError when the body is not a v1 AdmissionReview with a request uid; every
    other outcome, plugin failures included, is a well-formed response.
    """
    request, pod = parse_review(admission_review)
    uid = request.uid
    if pod is None:
        return response(uid)
    try:
        mutation = mutate(pod, engine, request)
    except Denied as denial:
        return response(uid, allowed=False, message=str(denial), code=403, warnings=request.warnings)
    except PluginError as failure:
        log.error("pod %s/%s: %s", request.namespace, request.name, failure)  # one line; the traceback at debug
        log.debug(
            "pod %s/%s: the traceback of %s", request.namespace, request.name, failure.plugin, exc_info=failure.error
        )
        if engine.config.failure_mode == "fail":
            return response(uid, allowed=False, message=f"podmutate: {failure}", code=500)
        return response(uid, warnings=[f"podmutate: {failure}; the pod was admitted unmutated"])
    return response(uid, patch=mutation.patch, warnings=mutation.warnings)


def response(
    uid: str,
    *,
    allowed: bool = True,
    patch: list | None = None,
    warnings: Any = (),
    message: str | None = None,
    code: int | None = None,
) -> dict:
    """Build an AdmissionReview response; a patch is sent only when it changes something."""
    answer = {"uid": uid, "allowed": allowed}
    if patch:
        answer["patchType"] = "JSONPatch"
        answer["patch"] = base64.b64encode(orjson.dumps(patch)).decode()
    if warnings:
        answer["warnings"] = list(warnings)
    if not allowed:
        answer["status"] = {"code": code, "message": message, "reason": "Forbidden" if code == 403 else "InternalError"}
    return {"apiVersion": API_VERSION, "kind": KIND, "response": answer}


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


def json_type(value: Any) -> str:
    """The JSON name of a parsed value's type, for error messages."""
    names = {
        dict: "an object",
        list: "an array",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        type(None): "null",
    }
    return names.get(type(value), type(value).__name__)
