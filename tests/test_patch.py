"""The diff: the patch the walk emits must turn the original into the mutated document, exactly,
as jsonpatch (the reference) applies it, and touch only what changed."""

import copy
import json

import jsonpatch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import examples
from webhook.patch import diff

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.floats(-2, 2, allow_nan=False),
    st.sampled_from(["a", "b", "/", "~", "a/b~c"]),
)
documents = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(st.sampled_from(["a", "b", "c", "x/y", "m~n"]), children, max_size=4),
    ),
    max_leaves=25,
)


@st.composite
def edited(draw):
    """A document and an edited deep copy of it (items added, removed, changed, moved)."""
    original = draw(documents)
    mutated = copy.deepcopy(original)

    def edit(node):
        if isinstance(node, dict):
            for key in list(node):
                choice = draw(st.integers(0, 5))
                if choice == 0:
                    del node[key]
                elif choice == 1:
                    node[key] = draw(documents)
                else:
                    edit(node[key])
            if draw(st.booleans()):
                node[draw(st.sampled_from(["a", "new", "p/q"]))] = draw(documents)
        elif isinstance(node, list):
            for item in node:
                edit(item)
            choice = draw(st.integers(0, 4))
            if choice == 0 and node:
                node.pop(draw(st.integers(0, len(node) - 1)))
            elif choice == 1:
                node.insert(draw(st.integers(0, len(node))), draw(documents))
            elif choice == 2 and len(node) > 1:
                node.append(node.pop(0))

    edit(mutated)
    return original, mutated


def as_json(document):
    return json.dumps(document, sort_keys=True)


@settings(max_examples=examples(3000), deadline=None)
@given(edited())
def test_the_patch_turns_the_original_into_the_mutated_document(pair):
    original, mutated = pair
    patch = diff(original, mutated)
    assert as_json(jsonpatch.apply_patch(original, patch)) == as_json(mutated)
    for operation in patch:  # only paths that changed
        pointer = jsonpatch.JsonPointer(operation["path"])
        before = pointer.resolve(original, default=ABSENT) if operation["path"] else original
        after = pointer.resolve(mutated, default=ABSENT) if operation["path"] else mutated
        if operation["op"] == "add":
            assert before is ABSENT, operation  # a new member, or an item appended to a list
        else:
            assert as_json(before) != as_json(after), operation


ABSENT = "<absent>"


def test_equal_documents_give_no_patch():
    assert diff({"a": [1, {"b": 2}]}, {"a": [1, {"b": 2}]}) == []


def test_equal_items_keep_their_place_and_paths_are_escaped():
    original = {"metadata": {"labels": {"a": "1"}}, "spec": {"containers": [{"name": "main"}, {"name": "relay"}]}}
    mutated = copy.deepcopy(original)
    mutated["metadata"]["labels"]["example.com/tier"] = "gold"
    mutated["spec"]["containers"][1]["volumeMounts"] = [{"name": "tmp", "mountPath": "/tmp"}]
    assert diff(original, mutated) == [
        {"op": "add", "path": "/metadata/labels/example.com~1tier", "value": "gold"},
        {"op": "add", "path": "/spec/containers/1/volumeMounts", "value": [{"name": "tmp", "mountPath": "/tmp"}]},
    ]
