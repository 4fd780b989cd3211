"""Raises while mutating a pod annotated example.com/explode: "true", to test failure handling."""

from webhook import hookimpl


@hookimpl
def mutate_pod(pod):
    if (pod["metadata"].get("annotations") or {}).get("example.com/explode") == "true":
        # Edit first, then raise: the host must throw the half-edited copy away.
        pod["metadata"].setdefault("labels", {})["example.com/half-done"] = "yes"
        raise RuntimeError("boom on purpose")
