"""What every router of the app shares: the service, its read model and metrics, the intake limits
and the guard of mutating endpoints, built once by ``create_app``.

Holds values only: no route, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from controller.api.metrics import ServiceMetrics
from controller.api.readmodel import ReadModel
from controller.api.schemas import ErrorBody
from controller.engine.loop import CycleLoop
from controller.intake.validation import IntakeLimits
from controller.service import Service


@dataclass(frozen=True, slots=True)
class ApiContext:
    """The parts of one app, handed to each router factory."""

    service: Service
    loop: CycleLoop | None
    views: ReadModel
    metrics: ServiceMetrics
    limits: IntakeLimits
    authorized: Callable[..., None]  # the dependency guarding mutating endpoints

    def now(self) -> float:
        return self.service.clock()


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` entry for error answers: each one an ``ErrorBody``."""
    return {code: {"model": ErrorBody} for code in codes}
