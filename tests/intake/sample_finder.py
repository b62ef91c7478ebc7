"""A finder for tests: three conversions per slot, named after the slot."""

from __future__ import annotations

from controller.intake.finder import FinderContext, Found


def find(context: FinderContext) -> Found:
    slot = int(context.slot)
    return Found(
        [
            {"conversion_id": f"slot{slot}-{n}", "tenant_id": n + 1, "params": {"from": "finder"}}
            for n in range(3)
        ],
        watermark=str(slot),
    )
