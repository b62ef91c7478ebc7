"""A conversion id sent again: the same content is a duplicate, other content is a conflict.

Pure: compares what the ledger holds with what arrived, and names the first field that differs.
Every intake and both ledgers' ``accept`` use it, so an id never silently stands for two requests.
Does no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from controller.core.domain import ConversionRequest
from controller.core.errors import ConflictError

_SHOWN = 60  # characters of a parameter value quoted in the message


def difference(known: ConversionRequest, again: ConversionRequest) -> str | None:
    """Which field of ``again`` differs from ``known`` (same id), or None when they are the same."""
    if known.tenant_id != again.tenant_id:
        return f"tenant_id is {known.tenant_id} there and {again.tenant_id} here"
    if dict(known.params) != dict(again.params):
        for key in sorted(set(known.params) | set(again.params)):
            there, here = known.params.get(key), again.params.get(key)
            if there != here:
                return f"params[{key!r}] is {_quote(there)} there and {_quote(here)} here"
    return None


def _quote(value: str | None) -> str:
    return "absent" if value is None else repr(value[:_SHOWN])


def refuse_conflicts(known: Mapping[str, ConversionRequest], arrived: Iterable[ConversionRequest]) -> None:
    """``ConflictError`` naming the first arrived request whose id is known with other content."""
    for request in arrived:
        first = known.get(request.conversion_id)
        if first is None:
            continue
        why = difference(first, request)
        if why is not None:
            raise ConflictError(
                f"conversion {request.conversion_id!r} was already sent with other content ({why}); "
                "nothing of this request was recorded: send a new id for a new conversion"
            )


def within(requests: Iterable[ConversionRequest]) -> None:
    """``ConflictError`` when one batch carries the same id twice with different content."""
    first: dict[str, ConversionRequest] = {}
    for request in requests:
        refuse_conflicts(first, [request])
        first.setdefault(request.conversion_id, request)
