"""A comparator for another format (``CUTOVER_SHADOW_COMPARATOR=tests.shadow.plugin_comparator:compare``):
two text files, line by line."""

from __future__ import annotations

from pathlib import Path

from controller.core.parity import CompareOptions, Comparison, Difference


def compare(legacy: Path, new: Path, options: CompareOptions) -> Comparison:
    found = Comparison()
    old_lines = legacy.read_text().splitlines()
    new_lines = new.read_text().splitlines()
    for n, (a, b) in enumerate(zip(old_lines, new_lines, strict=False), 1):
        if a != b:
            found.add(Difference("text", f"line {n}", "line", a, b))
    return found


def broken(legacy: Path, new: Path, options: CompareOptions) -> Comparison:
    raise RuntimeError("cannot read this format")


not_callable = 42
