"""A backend that hands every call to the backend it wraps: the base of backend decorators (the
metrics' timing, the chaos benchmark's injected faults), which override only the calls they change.

It does nothing of its own (no I/O, no decision); it must not hide what the wrapped backend offers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from controller.core.domain import DispatchBatch, JobRef, JobState
from controller.core.ports import Advisories, Backend, Inventory, ReconcileCounts

# Ports a backend may offer besides ``Backend``; the engine and the service ask with isinstance.
OPTIONAL_PORTS: tuple[type, ...] = (Inventory, Advisories, ReconcileCounts)


def port_methods(port: type) -> tuple[str, ...]:
    """The names of the methods a port (a Protocol class) declares."""
    return tuple(name for name, value in vars(port).items() if not name.startswith("_") and callable(value))


_OPTIONAL_METHODS = tuple(name for port in OPTIONAL_PORTS for name in port_methods(port))


class ForwardingBackend:
    """Every ``Backend`` call goes to ``inner``; so do the optional ports ``inner`` offers, and any
    other attribute it has."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.path = inner.path
        # The optional ports are bound on the instance rather than left to __getattr__: from Python
        # 3.12, isinstance on a runtime-checkable protocol looks members up without calling it, and
        # a decorated backend must still be reconciled, counted and heard. A method a subclass
        # defines itself is left alone.
        for name in _OPTIONAL_METHODS:
            if not hasattr(type(self), name) and hasattr(inner, name):
                setattr(self, name, getattr(inner, name))

    def submit(self, batch: DispatchBatch) -> list[JobRef]:
        return self.inner.submit(batch)

    def poll(self, refs: Sequence[JobRef]) -> dict[JobRef, JobState]:
        return self.inner.poll(refs)

    def find(self, intents: Sequence[tuple[str, str]]) -> dict[str, JobRef]:
        return self.inner.find(intents)

    def cancel(self, ref: JobRef) -> None:
        self.inner.cancel(ref)

    def set_capacity(self, slots: int) -> int | None:
        return self.inner.set_capacity(slots)

    def in_use(self) -> int:
        return self.inner.in_use()

    def close(self) -> None:
        self.inner.close()

    def __getattr__(self, name: str) -> Any:
        if name == "inner":  # not set yet (copying, unpickling): no wrapped backend to ask
            raise AttributeError(name)
        return getattr(self.inner, name)
