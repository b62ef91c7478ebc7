"""Flag handling: parse, validate and build the snapshot for flags of 1,000, 10,000 and 100,000 ids.

Input, built here: the agent's answer for one flag (``{"enabled": true, "tenant_ids": [...]}``)
with distinct random ids below 10^7, as bytes, the way a source receives it.

Ours: ``flags.document.parse_flag`` as the agent source calls it: strict JSON decoding, validation
of the whole document (pydantic, strict whole numbers 1 ≤ id ≤ 2^53-1, any bad value rejects it
all) and the immutable ``FlagSnapshot`` with its frozenset of ids.

Naive: what one writes by hand without a schema library: ``json.loads``, then a Python loop that
checks each element (an int that is not a bool, within the same bounds) and adds it to a set. It
gives the same answer and the same rejections; it only skips naming the bad element's position.

Each size is timed ``--repeat`` times, ours and naive alternating; figures are medians in
milliseconds. At the largest size, ours is also timed on the other two forms a flag arrives in:
the values form (the file source) and the full definition document AppConfig stores; both also
hash the content for a version. Prints one JSON object.
"""

from __future__ import annotations

import json
import random
import time
from typing import Any

from harness import FLAG_KEY, arguments, emit, goal, machine, median

from flags.document import MAX_TENANT_ID, Shape, definition_document, parse_flag, values_document

GOAL_MS = 50.0


def _options(parser: Any) -> None:
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--repeat", type=int, default=31)


def ours(raw: bytes) -> frozenset[int]:
    snapshot = parse_flag(raw, flag_key=FLAG_KEY, source="agent", fetched_at=0.0, version="7", shape="flag")
    return snapshot.tenant_ids


def naive(raw: bytes) -> frozenset[int]:
    doc = json.loads(raw)
    if not isinstance(doc, dict) or not isinstance(doc.get("enabled"), bool):
        raise ValueError("not a flag")
    ids = doc.get("tenant_ids")
    if not isinstance(ids, list):
        raise ValueError("tenant_ids must be a list")
    out: set[int] = set()
    for value in ids:
        if type(value) is not int or not 1 <= value <= MAX_TENANT_ID:
            raise ValueError(f"bad tenant id {value!r}")
        out.add(value)
    return frozenset(out) if doc["enabled"] else frozenset()


def forms(ids: list[int], repeat: int) -> dict[str, dict[str, float]]:
    """Ours on each document form a flag can arrive in, for the same ids."""
    docs: dict[str, tuple[bytes, Shape, str | None]] = {
        "agent answer (?flag=)": (json.dumps({"enabled": True, "tenant_ids": ids}).encode(), "flag", "7"),
        "values form (file)": (json.dumps(values_document(FLAG_KEY, True, ids)).encode(), "auto", None),
        "definition document": (json.dumps(definition_document(FLAG_KEY, True, ids)).encode(), "auto", None),
    }
    out = {}
    for name, (raw, shape, version) in docs.items():
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            parse_flag(raw, flag_key=FLAG_KEY, source="bench", fetched_at=0.0, version=version, shape=shape)
            times.append(1000 * (time.perf_counter() - t0))
        out[name] = {"bytes": len(raw), "ms": round(median(times), 3)}
    return out


def timed(fn: Any, raw: bytes) -> tuple[float, frozenset[int]]:
    t0 = time.perf_counter()
    result = fn(raw)
    return 1000 * (time.perf_counter() - t0), result


def main() -> None:
    args = arguments(__doc__, _options)
    if args.smoke:
        args.repeat = 3
    rng = random.Random(3)
    rows = []
    ids: list[int] = []
    for size in sorted(args.sizes):
        ids = rng.sample(range(1, 10**7), size)
        raw = json.dumps({"enabled": True, "tenant_ids": ids}).encode()
        ours_ms, naive_ms = [], []
        same = True
        for _ in range(args.repeat):
            a, got_ours = timed(ours, raw)
            b, got_naive = timed(naive, raw)
            ours_ms.append(a)
            naive_ms.append(b)
            same = same and got_ours == got_naive == frozenset(ids)
        rows.append(
            {
                "ids": size,
                "bytes": len(raw),
                "ours_ms": round(median(ours_ms), 3),
                "naive_ms": round(median(naive_ms), 3),
                "ratio": round(median(naive_ms) / median(ours_ms), 2),
                "same_result": same,
            }
        )
    largest = max(rows, key=lambda r: r["ids"])
    emit(
        {
            "benchmark": "flag_parse",
            "smoke": args.smoke,
            "machine": machine(),
            "inputs": {"sizes": args.sizes, "repeat": args.repeat},
            "naive_is": "json.loads and a per-element Python check into a set",
            "sizes": rows,
            f"forms_at_{largest['ids']}_ids": forms(ids, args.repeat),
            "goals": {f"ours_ms_at_{largest['ids']}_ids": goal(largest["ours_ms"], GOAL_MS, "<")},
        }
    )


if __name__ == "__main__":
    main()
