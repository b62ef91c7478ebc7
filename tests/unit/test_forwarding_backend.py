"""The forwarding base of backend decorators: every port call reaches the wrapped backend with its
arguments and comes back with its answer, and the optional ports it offers stay visible to the
isinstance checks of the engine, the service and the metrics."""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from controller.core.domain import DispatchBatch, JobRef, JobState, JobStatus, Path
from controller.core.ports import Advisories, Backend, Inventory, ReconcileCounts, Run
from controller.plumbing.forwarding import OPTIONAL_PORTS, ForwardingBackend, port_methods

REF = JobRef("j1", "c1")
BATCH = DispatchBatch("Nkey", Path.NEW, (), 0)


class Recording:
    """A backend that records each call and answers with values a forwarder must pass on as they are."""

    path = Path.NEW

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def submit(self, batch: DispatchBatch) -> list[JobRef]:
        self.calls.append(("submit", batch))
        return [REF]

    def poll(self, refs: Sequence[JobRef]) -> dict[JobRef, JobState]:
        self.calls.append(("poll", refs))
        return {REF: JobState(JobStatus.RUNNING)}

    def find(self, intents: Sequence[tuple[str, str]]) -> dict[str, JobRef]:
        self.calls.append(("find", intents))
        return {"c1": REF}

    def cancel(self, ref: JobRef) -> None:
        self.calls.append(("cancel", ref))

    def set_capacity(self, slots: int) -> int | None:
        self.calls.append(("set_capacity", slots))
        return slots + 1

    def in_use(self) -> int:
        self.calls.append(("in_use", None))
        return 7

    def close(self) -> None:
        self.calls.append(("close", None))


class Offering(Recording):
    """A backend with every optional port, as the AWS adapters have."""

    extra = "visible"

    def inventory(self, since: float) -> list[Run]:
        return [Run(REF, JobStatus.UNKNOWN, since)]

    def outcomes(self, refs: Sequence[JobRef]) -> dict[JobRef, JobState]:
        return {r: JobState(JobStatus.SUCCEEDED) for r in refs}

    def warnings(self) -> list[str]:
        return ["quota low"]

    def reconcile_counts(self) -> Mapping[str, int]:
        return {"duplicates": 1, "orphans": 2}


def test_every_port_call_reaches_the_wrapped_backend_and_its_answer_comes_back() -> None:
    inner = Recording()
    wrapper = ForwardingBackend(inner)
    assert wrapper.path is Path.NEW
    assert wrapper.submit(BATCH) == [REF]
    assert wrapper.poll([REF]) == {REF: JobState(JobStatus.RUNNING)}
    assert wrapper.find([("c1", "Nkey")]) == {"c1": REF}
    assert wrapper.cancel(REF) is None
    assert wrapper.set_capacity(3) == 4
    assert wrapper.in_use() == 7
    wrapper.close()
    assert inner.calls == [
        ("submit", BATCH),
        ("poll", [REF]),
        ("find", [("c1", "Nkey")]),
        ("cancel", REF),
        ("set_capacity", 3),
        ("in_use", None),
        ("close", None),
    ]


def test_the_base_forwards_every_method_the_backend_port_declares() -> None:
    """A method added to the port must be forwarded here too, not left to ``__getattr__``."""
    assert set(port_methods(Backend)) <= set(vars(ForwardingBackend))


@pytest.mark.parametrize("port", OPTIONAL_PORTS, ids=lambda p: p.__name__)
def test_an_optional_port_the_wrapped_backend_offers_is_offered_through_wrappers(port: type) -> None:
    inner = Offering()
    for wrapper in (ForwardingBackend(inner), ForwardingBackend(ForwardingBackend(inner))):
        assert isinstance(wrapper, port)
        for name in port_methods(port):
            # how isinstance looks members up from Python 3.12: without __getattr__
            assert inspect.getattr_static(wrapper, name) == getattr(inner, name)


@pytest.mark.parametrize("port", OPTIONAL_PORTS, ids=lambda p: p.__name__)
def test_a_wrapper_does_not_claim_an_optional_port_the_wrapped_backend_lacks(port: type) -> None:
    assert not isinstance(ForwardingBackend(Recording()), port)


def test_the_optional_ports_answer_as_the_wrapped_backend_does() -> None:
    wrapper: Any = ForwardingBackend(Offering())
    assert isinstance(wrapper, Inventory)
    assert wrapper.inventory(5.0) == [Run(REF, JobStatus.UNKNOWN, 5.0)]
    assert wrapper.outcomes([REF]) == {REF: JobState(JobStatus.SUCCEEDED)}
    assert isinstance(wrapper, Advisories)
    assert wrapper.warnings() == ["quota low"]
    assert isinstance(wrapper, ReconcileCounts)
    assert wrapper.reconcile_counts() == {"duplicates": 1, "orphans": 2}
    assert wrapper.extra == "visible"


def test_a_decorator_overrides_only_what_it_changes() -> None:
    class Counting(ForwardingBackend):
        submits = 0

        def submit(self, batch: DispatchBatch) -> list[JobRef]:
            Counting.submits += 1
            return super().submit(batch)

        def warnings(self) -> list[str]:
            return ["from the decorator"]

    inner = Offering()
    wrapper = Counting(inner)
    assert wrapper.submit(BATCH) == [REF]
    assert Counting.submits == 1
    assert wrapper.in_use() == 7
    assert wrapper.warnings() == ["from the decorator"]
    assert isinstance(wrapper, Inventory)
    assert [name for name, _ in inner.calls] == ["submit", "in_use"]


def test_a_missing_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError):
        _ = ForwardingBackend(Recording()).inventory
