"""One comparison of a shadow's output with its conversion's: fetch both (bounded), run the
comparator, and say what it found as a ``ShadowVerdict`` and a ``Comparison``.

The comparator is the ``.xlsx`` one unless ``CUTOVER_SHADOW_COMPARATOR`` names another
(``package.module:callable`` taking the two local files and the options). Whatever it raises is
an unreadable output, never a crash of the caller. Decides nothing about noise or parity.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from controller.core.errors import ConfigError
from controller.core.parity import Comparator, CompareOptions, Comparison
from controller.core.shadow import ShadowRecord, ShadowState, ShadowVerdict
from controller.shadow.outputs import OutputError, Outputs
from controller.shadow.xlsx import TooLargeError, compare_workbooks

DEFAULT_MAX_BYTES = 50 * 1024 * 1024


def load_comparator(spec: str) -> Comparator:
    """The callable ``package.module:name`` names; ``ConfigError`` naming the setting otherwise."""
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # an import may fail in any way; the operator needs the setting named
        raise ConfigError(f"CUTOVER_SHADOW_COMPARATOR: cannot import {module_name!r} ({exc})") from exc
    found = getattr(module, attr, None)
    if not callable(found):
        raise ConfigError(f"CUTOVER_SHADOW_COMPARATOR: {spec!r} is not a callable")
    comparator: Comparator = found
    return comparator


@dataclass(frozen=True, slots=True)
class Finding:
    """What one comparison concluded, and a note for the record."""

    verdict: ShadowVerdict
    comparison: Comparison
    note: str = ""


class Judge:
    """Compares shadows' outputs with their conversions' outputs."""

    def __init__(
        self,
        outputs: Outputs,
        options: CompareOptions,
        *,
        comparator: Comparator | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.outputs = outputs
        self.options = options
        self.max_bytes = max_bytes
        self._compare: Callable[[Any, Any, CompareOptions], Comparison] = comparator or self._xlsx

    def _xlsx(self, legacy: Any, new: Any, options: CompareOptions) -> Comparison:
        return compare_workbooks(legacy, new, options, max_bytes=self.max_bytes)

    def judge(self, shadow: ShadowRecord, baseline: str | None) -> Finding:
        """Judge ``shadow`` against its conversion's output ``baseline`` (None: it has none)."""
        if baseline is None:
            return Finding(
                ShadowVerdict.NO_BASELINE, Comparison(), "the conversion has no output to compare with"
            )
        if shadow.state is ShadowState.FAILED or not shadow.output:
            return Finding(ShadowVerdict.SHADOW_FAILED, Comparison(), shadow.reason or "no output")
        try:
            with (
                self.outputs.local(baseline, self.max_bytes) as legacy,
                self.outputs.local(shadow.output, self.max_bytes) as new,
            ):
                comparison = self._compare(legacy, new, self.options)
        except TooLargeError as exc:
            return Finding(ShadowVerdict.TOO_LARGE, Comparison(), str(exc))
        except OutputError as exc:
            return Finding(ShadowVerdict.UNREADABLE, Comparison(), str(exc))
        except Exception as exc:  # a comparator (or a workbook it cannot parse) must not stop the rest
            return Finding(ShadowVerdict.UNREADABLE, Comparison(), f"{type(exc).__name__}: {exc}")
        if not isinstance(comparison, Comparison):
            return Finding(
                ShadowVerdict.UNREADABLE, Comparison(), "the comparator did not return a Comparison"
            )
        return Finding(ShadowVerdict.MATCH if comparison.equal else ShadowVerdict.DIFFERENT, comparison)
