"""The plain-JSON reader gives exactly what the careful reader gives (property test).

``extract`` reads an object with ``_plain_workload`` and falls back to ``_careful_workload``
(the reference, which names every wrong field) when the object is not plain, well-typed JSON.
Random objects, well-typed or not, must get the same Workload or the same error both ways, and
well-typed ones must really take the plain route.
"""

from __future__ import annotations

import copy
import types
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from archwarden import policy
from archwarden.policy import InvalidWorkload, Workload, _workloads, extract
from tests.policy import objects
from tests.policy.test_workloads import FULL_SPEC

STRINGS = st.sampled_from(["", "a", "web", "registry.local/a:1", " b:2 ", "metadata.name"])
OPERATORS = st.sampled_from(["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt", "Equal", "?"])


def wild(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly ``good``; sometimes null, or a value of the wrong type, or another container type."""
    other = st.sampled_from([None, 7, True, "x", [], {}, ("t",), 1.5])

    def retyped(value: Any) -> Any:
        if isinstance(value, dict):
            return types.MappingProxyType(value)
        if isinstance(value, list):
            return tuple(value)
        return value

    return st.one_of(good, good, good, good, other, good.map(retyped))


def fields(shape: dict[str, st.SearchStrategy[Any]], wrong: bool) -> st.SearchStrategy[Any]:
    """An object with any subset of ``shape``'s fields."""
    chosen = {key: wild(value) if wrong else value for key, value in shape.items()}
    return st.fixed_dictionaries({}, optional=chosen)


def pod_specs(wrong: bool) -> st.SearchStrategy[Any]:
    def obj(shape: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
        return fields(shape, wrong)

    def listed(item: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        values = st.lists(wild(item) if wrong else item, max_size=3)
        return wild(values) if wrong else values

    container = obj({"name": STRINGS, "image": STRINGS, "ports": st.just([{"containerPort": 80}])})
    requirement = obj({"key": STRINGS, "operator": OPERATORS, "values": listed(STRINGS)})
    term = obj({"matchExpressions": listed(requirement), "matchFields": listed(requirement)})
    required = obj({"nodeSelectorTerms": listed(term)})
    affinity = obj(
        {"nodeAffinity": obj({_workloads._REQUIRED: required}), "podAffinity": st.just({})}
    )
    toleration = obj({"key": STRINGS, "operator": OPERATORS, "value": STRINGS, "effect": STRINGS})
    image_source = obj({"reference": STRINGS, "pullPolicy": STRINGS})
    volume = obj({"name": STRINGS, "image": image_source, "emptyDir": st.just({})})
    shape = {
        "containers": listed(container),
        "initContainers": listed(container),
        "ephemeralContainers": listed(container),
        "volumes": listed(volume),
        "nodeSelector": st.dictionaries(STRINGS, wild(STRINGS) if wrong else STRINGS, max_size=3),
        "affinity": affinity,
        "tolerations": listed(toleration),
        "imagePullSecrets": listed(obj({"name": STRINGS})),
        "serviceAccountName": STRINGS,
        "serviceAccount": STRINGS,
        "nodeName": STRINGS,
    }
    return obj(shape)


def shaped(kind: str, spec: Any) -> dict[str, Any]:
    if kind == "Pod":
        return {"apiVersion": "v1", "kind": "Pod", "metadata": {}, "spec": spec}
    return objects.workload(kind, spec) if kind in _workloads.SPEC_PATHS else {"kind": kind}


@st.composite
def workloads(draw: st.DrawFn, wrong: bool) -> Any:
    kind = draw(st.sampled_from([*_workloads.SPEC_PATHS, "Node"]))
    spec = draw(pod_specs(wrong))
    owner = fields({"controller": st.booleans(), "kind": STRINGS}, wrong)
    meta = fields(
        {
            "name": STRINGS,
            "generateName": STRINGS,
            "namespace": STRINGS,
            "ownerReferences": st.lists(owner, max_size=2),
        },
        wrong,
    )
    obj = shaped(kind, spec)
    obj["metadata"] = draw(meta)
    if wrong and draw(st.integers(0, 9)) == 0:
        obj.pop("spec", None)
    return obj


def outcome(read: Callable[[Any, str | None], Workload], obj: Any) -> Workload | str:
    try:
        return read(obj, None)
    except InvalidWorkload as exc:
        return f"InvalidWorkload: {exc}"


@settings(max_examples=400, deadline=None)
@given(workloads(wrong=True))
def test_any_object_reads_the_same_both_ways(obj: Any) -> None:
    expected = outcome(_workloads._careful_workload, obj)
    assert outcome(lambda o, k: extract(o, kind=k), obj) == expected


@settings(max_examples=300, deadline=None)
@given(workloads(wrong=False))
def test_well_typed_objects_take_the_plain_route(obj: Any) -> None:
    try:
        plain = _workloads._plain_workload(obj, None)
    except _workloads._Irregular:
        # Left to the careful reader only for what it must judge: an unknown kind, a missing
        # spec or containers list, an operator it checks, a matchFields key other than the name.
        careful = outcome(_workloads._careful_workload, obj)
        uses_gt_lt = any(op in repr(obj) for op in ("'Gt'", "'Lt'"))
        assert isinstance(careful, str) or uses_gt_lt, careful
        return
    assert plain == _workloads._careful_workload(obj, None)


def test_a_full_spec_takes_the_plain_route_without_gt_or_lt() -> None:
    spec = copy.deepcopy(FULL_SPEC)
    affinity = spec["affinity"]["nodeAffinity"][_workloads._REQUIRED]["nodeSelectorTerms"]
    affinity[0]["matchExpressions"] = affinity[0]["matchExpressions"][:1]  # drop the Gt
    for kind in _workloads.SPEC_PATHS:
        obj = shaped(kind, spec)
        obj["metadata"]["ownerReferences"] = [{"kind": "ReplicaSet", "controller": True}]
        assert _workloads._plain_workload(obj, None) == _workloads._careful_workload(obj, None)


@pytest.mark.parametrize(
    "edit",
    [
        lambda o: o["spec"].update(containers=None),
        lambda o: o["spec"].update(nodeSelector={"a": 1}),
        lambda o: o["metadata"].update(ownerReferences=[{"controller": "yes"}]),
        lambda o: o.update(spec=types.MappingProxyType(o["spec"])),
    ],
)
def test_what_is_not_plain_goes_to_the_careful_reader(edit: Callable[[Any], None]) -> None:
    obj = objects.pod("registry.local/a:1")
    edit(obj)
    with pytest.raises(_workloads._Irregular):
        _workloads._plain_workload(obj, None)


@given(workloads(wrong=True))
def test_the_count_before_extraction_never_exceeds_the_projection(obj: Any) -> None:
    """``least_projected_bytes`` refuses a template before it is built (admission, the
    workload store): it must be a lower bound, or a template within limits.templateBytes
    could be refused."""
    least = policy.least_projected_bytes(obj)
    try:
        workload = extract(obj)
    except InvalidWorkload:
        return  # refused either way
    assert least <= workload.template.projected_bytes
