"""Mutating pods without a cluster, as the webhook would: what `podmutate mutate` and `podmutate test` run.

A document is a Pod, a v1 List of them, or an AdmissionReview (read by the same parser as the
server's, so plugins see the same request offline as served). Anything else passes through.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from webhook import admission, wire
from webhook.admission import Mutation
from webhook.engine import Engine
from webhook.wire import AdmissionRequest


@dataclass
class Change:
    """One operation of a patch and who made it: the plugins, and where its value came from."""

    op: str
    path: str
    plugins: list[str]
    source: str | None = None


@dataclass
class Result:
    """One YAML document after mutation: the document, each of its pods' mutations, or an error."""

    document: Any
    mutations: list[Mutation] = field(default_factory=list)
    error: str | None = None


def mutate_document(document: Any, engine: Engine) -> Result:
    """The document with every pod in it mutated; plugin failures and denials become `error`."""
    result = Result(document)
    try:
        result.document = _mutate(document, engine, result.mutations)
    except (admission.PluginError, admission.Denied, admission.ReviewError) as error:
        return Result(document, error=f"{document_name(document)}: {error}")
    return result


def _mutate(document: Any, engine: Engine, mutations: list[Mutation]) -> Any:
    if not isinstance(document, dict):
        return document
    kind = document.get("kind")
    if kind == "List":
        return {**document, "items": [_mutate(item, engine, mutations) for item in document.get("items") or []]}
    if kind == "AdmissionReview":
        request, pod = wire.parse_review(document)
        return pod if pod is None else _mutate_pod(pod, engine, mutations, request)
    if kind == "Pod" and str(document.get("apiVersion", "v1")) == "v1":
        wire.check_object_shape(document)  # an AdmissionReview's pod is checked by parse_review
        return _mutate_pod(document, engine, mutations)
    return document


def _mutate_pod(pod: dict, engine: Engine, mutations: list[Mutation], request: AdmissionRequest | None = None) -> dict:
    mutation = admission.mutate(pod, engine, request)
    mutations.append(mutation)
    return mutation.pod


def document_name(document: Any) -> str:
    """`Pod name` for a message about a document."""
    if not isinstance(document, dict):
        return f"a {type(document).__name__}"
    metadata = document.get("metadata") or {}
    if not isinstance(metadata, dict):
        metadata = {}
    return f"{document.get('kind', 'object')} {metadata.get('name') or metadata.get('generateName') or '(unnamed)'}"


def explain(pod: dict, engine: Engine) -> list[Change]:
    """Every operation of the patch the webhook would send for `pod`, with the plugins that made it.

    An operation belongs to every plugin whose own changes lie at, under or above its path.
    Where a plugin said where a value came from (``request.explain``), that is the source.
    """
    request = AdmissionRequest(namespace=(pod.get("metadata") or {}).get("namespace") or "", sources={})
    mutation = admission.mutate(pod, engine, request, attribute=True)
    touched = mutation.touched or []
    return [
        Change(
            op=operation["op"],
            path=operation["path"],
            plugins=list(dict.fromkeys(name for path, name in touched if related(path, operation["path"]))),
            source=source_of(operation["path"], request.sources or {}),
        )
        for operation in mutation.patch
    ]


def related(first: str, second: str) -> bool:
    """Whether one JSON pointer is the other or lies under it."""
    return first == second or first.startswith(second + "/") or second.startswith(first + "/")


def source_of(path: str, sources: dict[str, str]) -> str | None:
    """The source said for `path`: the most precise one at or above it, else every one below it."""
    above = [pointer for pointer in sources if pointer == path or path.startswith(pointer + "/")]
    if above:
        return sources[max(above, key=len)]
    below = dict.fromkeys(source for pointer, source in sources.items() if pointer.startswith(path + "/"))
    return "; ".join(below) or None
