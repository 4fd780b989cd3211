"""RFC 6902 patches as diffs of the mutated pod against the original, computed by jsonpatch.

jsonpatch walks and serialises every member of both documents, which made it 80 % of a
review's time, though most of a pod is left as it was. So jsonpatch is given only what
differs, in a form that keeps every path as it is:

- equal members of a mapping are left out of both sides (the other members keep their paths);
- equal items of a list are replaced, on both sides, by a marker unique to their place (the
  other items keep their indexes);
- items of two lists of the same length that differ are pruned the same way, and each gets a
  marker member unique to its place, so jsonpatch pairs them by position and by nothing else.

A marker is never part of a correct patch: if one shows up in it (an item added whole after
all), the full diff is taken instead.
"""

import itertools

import jsonpatch
import orjson

MARKER = "\ue000podmutate-unchanged-"


def copy(document):
    """A deep copy of a JSON document (several times faster than copy.deepcopy)."""
    return orjson.loads(orjson.dumps(document))


def diff(original, mutated):
    """The JSONPatch (a list of operations) that turns `original` into `mutated`."""
    if original == mutated:
        return []
    source, target = prune(original, mutated, itertools.count())
    patch = jsonpatch.make_patch(source, target).patch
    if MARKER.encode() in orjson.dumps(patch):
        return jsonpatch.make_patch(original, mutated).patch
    return patch


def prune(source, target, counter):
    """`source` and `target` with what they have in common left out or marked (see above)."""
    if isinstance(source, dict) and isinstance(target, dict):
        pruned_source, pruned_target = {}, {}
        for key in itertools.chain(source, (key for key in target if key not in source)):
            if key not in target:
                pruned_source[key] = source[key]
            elif key not in source:
                pruned_target[key] = target[key]
            elif source[key] != target[key]:
                pruned_source[key], pruned_target[key] = prune(source[key], target[key], counter)
        return pruned_source, pruned_target
    if isinstance(source, list) and isinstance(target, list):
        pruned_source, pruned_target = list(source), list(target)
        same_length = len(source) == len(target)
        for index in range(min(len(source), len(target))):
            marker = f"{MARKER}{next(counter)}"
            if source[index] == target[index]:
                pruned_source[index] = pruned_target[index] = marker
            elif same_length and isinstance(source[index], dict) and isinstance(target[index], dict):
                pruned_source[index], pruned_target[index] = prune(source[index], target[index], counter)
                pruned_source[index][marker] = pruned_target[index][marker] = 0
        return pruned_source, pruned_target
    return source, target
