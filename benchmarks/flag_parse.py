"""How long validating a large migration flag takes: 100,000 tenant ids in each document form.

Run: ``python benchmarks/flag_parse.py [N]``. Prints the median and worst of 20 parses per form.
The controller parses the flag once per cycle; this must stay well under 100 ms.
"""

from __future__ import annotations

import json
import statistics
import sys
import time

from flags.document import Shape, definition_document, parse_flag, values_document

KEY = "migrated_tenants"


def measure(raw: bytes, shape: Shape, runs: int = 20) -> tuple[float, float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        parse_flag(raw, flag_key=KEY, source="bench", fetched_at=0.0, shape=shape)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), max(times)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    ids = list(range(10_000_001, 10_000_001 + n))
    forms: dict[str, tuple[bytes, Shape]] = {
        "agent answer (?flag=)": (json.dumps({"enabled": True, "tenant_ids": ids}).encode(), "flag"),
        "values form (file)": (json.dumps(values_document(KEY, True, ids)).encode(), "auto"),
        "definition document": (json.dumps(definition_document(KEY, True, ids)).encode(), "auto"),
    }
    print(f"parse_flag, {n} tenant ids, 20 runs each")
    for name, (raw, shape) in forms.items():
        median, worst = measure(raw, shape)
        print(f"  {name:<24} {len(raw) / 1e6:5.2f} MB   median {median:6.1f} ms   worst {worst:6.1f} ms")


if __name__ == "__main__":
    main()
