"""The admission core: an AdmissionReview dict in, the response dict out, no web framework."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pluggy

from webhook import pods
from webhook.contract import MUTATED_BY_ANNOTATION
from webhook.errors import Denied, ReviewError
from webhook.patch import TooDeep, copy, diff, pointer_token
from webhook.validity import annotation_problems, problems
from webhook.wire import (
    DENIED,
    FAILED,
    MUTATED,
    NO_JOB_TYPE,
    UNCHANGED,
    AdmissionRequest,
    parse_review,
    response,
)

if TYPE_CHECKING:
    from webhook.config import Config
    from webhook.engine import Engine

log = logging.getLogger(__name__)

MUTATED_BY_POINTER = f"/metadata/annotations/{pointer_token(MUTATED_BY_ANNOTATION)}"  # names the configuration


@dataclass
class Mutation:
    """The outcome of running the plugins on one pod."""

    job_type: str | None
    pod: dict
    patch: list
    warnings: list
    original: dict = field(default_factory=dict, repr=False)  # the pod as it came
    timings: list = field(default_factory=list, repr=False)  # (plugin, seconds its mutate_pod took)
    touched: list | None = field(default=None, repr=False)  # (JSON pointer, plugin), when attributing

    @property
    def changed_by(self) -> list[str]:
        """The plugins that changed something, in calling order (known when attributing)."""
        return list(dict.fromkeys(plugin for _path, plugin in self.touched or ()))


class PluginError(Exception):
    """A plugin raised while classifying or mutating; names the plugin."""

    def __init__(self, plugin: str, error: BaseException, mutation: Mutation | None = None) -> None:
        self.plugin = plugin
        self.error = error
        self.mutation = mutation  # how far the plugins got, when it was mutate_pod that raised
        super().__init__(f"plugin {plugin!r} failed: {type(error).__name__}: {error}")


def mutate(pod: dict, engine: Engine, request: AdmissionRequest | None = None, *, attribute: bool = False) -> Mutation:
    """Classify `pod` and run every enabled plugin, one at a time, on a deep copy of it; `pod` is left untouched.

    Returns a Mutation whose patch is the RFC 6902 diff of the copy against `pod`, with how long
    each plugin took and, with `attribute`, which plugin changed which path. Raises Denied when
    a plugin refuses the pod, and PluginError when one raises anything else: the copy is then
    thrown away whole, so a failure never yields half a patch.
    """
    request = request or AdmissionRequest(namespace=(pod.get("metadata") or {}).get("namespace") or "")
    try:
        job_type = engine.plugins.hook.classify_pod(pod=pod, namespace=request.namespace, config=engine.config)
    except Denied:
        raise
    except BaseException as error:  # SystemExit, KeyboardInterrupt...: a plugin's failure, not the worker's end
        raise PluginError(blame(engine.plugins, error), error) from error
    if job_type is None:
        return Mutation(job_type=None, pod=pod, patch=[], warnings=list(request.warnings), original=pod)
    try:
        mutable = copy(pod)
    except TooDeep as too_deep:  # only a direct caller can send such a pod: the API server has no free-form field
        raise ReviewError(f"request.object: {too_deep}") from None
    mutation = Mutation(job_type, mutable, [], [], original=pod, touched=[] if attribute else None)
    try:
        for name, mutate_alone in engine.mutators:
            run_plugin(name, mutate_alone, mutation.pod, mutation, engine, request)
        found = problems(mutation.pod)  # almost always empty: then the original need not be checked
        if found and found - problems(pod):
            mutate_validly(mutation, engine, request)
        if engine.config.mutated_by_annotation and mutation.pod != pod:
            annotate(mutation.pod, engine.mutated_by)
        mutation.patch = diff(pod, mutation.pod)
    except (TooDeep, TypeError, RecursionError) as error:  # a plugin left what is not JSON, or nested it too deep
        raise PluginError(blame(engine.plugins, error), error, mutation) from error
    mutation.warnings = list(request.warnings)
    return mutation


def annotate(pod: dict, mutated_by: str) -> None:
    """Name podmutate's plugins and configuration on a pod it changed, unless that would take its
    annotations past the API server's limit (which would make the create fail)."""
    annotations = pods.annotations(pod)
    previous = annotations.get(MUTATED_BY_ANNOTATION)
    annotations[MUTATED_BY_ANNOTATION] = mutated_by
    if annotation_problems(pod):
        if previous is None:
            del annotations[MUTATED_BY_ANNOTATION]
        else:
            annotations[MUTATED_BY_ANNOTATION] = previous


def run_plugin(
    name: str, mutate_alone: Any, pod: dict, mutation: Mutation, engine: Engine, request: AdmissionRequest
) -> None:
    """Run one plugin's mutate_pod on `pod`, timed; noting the paths it changed, when attributing."""
    before = copy(pod) if mutation.touched is not None else None
    started = time.perf_counter()
    try:
        mutate_alone(pod=pod, job_type=mutation.job_type, config=engine.config, request=request)
    except Denied as denial:
        denial.plugin, denial.mutation = name, mutation
        raise
    except BaseException as error:  # whatever a plugin raises fails the review, never the worker
        raise PluginError(name, error, mutation) from error
    finally:
        mutation.timings.append((name, time.perf_counter() - started))
    if before is not None:  # a new list: mutate_validly keeps the one before a change it undoes
        mutation.touched = [*(mutation.touched or ()), *((op["path"], name) for op in diff(before, pod))]


def mutate_validly(mutation: Mutation, engine: Engine, request: AdmissionRequest) -> None:
    """Run the plugins again one at a time, in their usual order, undoing any whose change the API
    server would refuse (with a warning naming it), so that a valid pod never comes back invalid."""
    baseline = problems(mutation.original)
    mutation.pod = copy(mutation.original)
    mutation.touched = [] if mutation.touched is not None else None
    for name, mutate_alone in engine.mutators:
        trial = copy(mutation.pod)
        kept = mutation.touched
        run_plugin(name, mutate_alone, trial, mutation, engine, request)
        introduced = problems(trial) - baseline
        if introduced:
            mutation.touched = kept
            request.warn(
                f"podmutate: {name} made no change: the API server would refuse the result ({sorted(introduced)[0]})"
            )
        else:
            mutation.pod = trial


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
    """Name the plugin a thread is in, from its innermost frame; "" when in none."""
    owners = hook_owners(pm)
    while frame is not None:
        if frame.f_code in owners:
            return owners[frame.f_code]
        frame = frame.f_back
    return ""


def failed_response(uid: str, config: Config, message: str, audit: dict[str, str]) -> dict:
    """The answer to a review podmutate could not complete: by `failure_mode`, denied, or admitted
    unmutated with a warning saying why."""
    if config.failure_mode == "fail":
        return response(uid, allowed=False, message=message, code=500, audit=audit)
    return response(uid, warnings=[f"{message}; the pod was admitted unmutated"], audit=audit)


def overrun_answer(admission_review: dict, config: Config, overrun: Any) -> Answer:
    """The answer to a review whose plugins overran the budget: by `failure_mode`, with a warning."""
    message = f"podmutate: {overrun}"
    answered = failed_response(
        admission_review["request"]["uid"], config, message, {"overrun": overrun.plugin or "review"}
    )
    return Answer(answered, FAILED, plugin=overrun.plugin, message=message, overrun=True)


def unreviewed_answer(uid: str, config: Config, reason: str, audit: str) -> Answer:
    """The answer to a review podmutate did not take up (beyond its work bound, or no memory
    for it in time): by `failure_mode`, with a warning naming `reason`. `audit` names the case."""
    message = f"podmutate: {reason}"
    answered = failed_response(uid, config, message, {"unreviewed": audit})
    return Answer(answered, FAILED, AdmissionRequest(uid=uid), message=message)


@dataclass
class Answer:
    """One review answered: the response, its outcome (webhook.wire's MUTATED, UNCHANGED, DENIED
    or FAILED) and what led to it."""

    response: dict
    outcome: str
    request: AdmissionRequest = field(default_factory=AdmissionRequest)
    mutation: Mutation | None = None  # with no patch when a plugin denied or failed: how far they got
    plugin: str = ""  # the plugin that failed, overran or denied
    message: str = ""  # why it failed or was denied
    overrun: bool = False  # failed by running past review_timeout_seconds

    @property
    def job_type(self) -> str:
        return (self.mutation.job_type if self.mutation else None) or NO_JOB_TYPE


def review(admission_review: Any, engine: Engine) -> dict:
    """Answer one AdmissionReview (a dict) with the AdmissionReview response dict.

    Raises ReviewError when the body is not a v1 AdmissionReview with a request uid; every
    other outcome, plugin failures included, is a well-formed response.
    """
    return answer(admission_review, engine).response


def answer(admission_review: Any, engine: Engine, *, attribute: bool = False) -> Answer:
    """`review`, with the outcome and what led to it; `attribute` finds which plugins changed what."""
    request, pod = parse_review(admission_review)
    uid = request.uid
    if pod is None:
        return Answer(response(uid), UNCHANGED, request)
    try:
        mutation = mutate(pod, engine, request, attribute=attribute)
        if not mutation.patch:
            return Answer(response(uid, warnings=mutation.warnings), UNCHANGED, request, mutation)
        audit = {
            "job-type": mutation.job_type or "",
            "mutated-by": engine.mutated_by,
            "patch": str(len(mutation.patch)),
        }
        try:
            mutated = response(uid, patch=mutation.patch, warnings=mutation.warnings, audit=audit)
        except TypeError as error:  # orjson's: a plugin left a value that is not JSON, or nested past its limit
            raise PluginError(blame(engine.plugins, error), error, mutation) from error
    except Denied as denial:
        denied = response(uid, allowed=False, message=str(denial), code=403, warnings=request.warnings)
        return Answer(denied, DENIED, request, denial.mutation, plugin=denial.plugin, message=str(denial))
    except PluginError as failure:
        log.debug(
            "pod %s/%s: the traceback of %s", request.namespace, request.name, failure.plugin, exc_info=failure.error
        )
        failed = failed_response(uid, engine.config, f"podmutate: {failure}", {"failed-plugin": failure.plugin})
        return Answer(failed, FAILED, request, failure.mutation, plugin=failure.plugin, message=str(failure))
    return Answer(mutated, MUTATED, request, mutation)
