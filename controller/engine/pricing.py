"""What each path costs: a dated price table and the billing arithmetic of Fargate and CodeBuild.

The default table ships with the package (``data/prices.json``: its date, region and sources are
in it) and a file with the same shape replaces it; nothing is ever fetched. Fargate bills each
task per second, at least one minute, for its vCPUs and memory; CodeBuild bills each build per
minute (a started minute counts whole) at the rate of its compute type.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from controller.core.errors import InputError
from controller.engine.validation import problem

DEFAULT_PRICES = FsPath(__file__).resolve().parent / "data" / "prices.json"

Money = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FargatePrices(_Strict):
    vcpu_hour: Money
    gb_hour: Money
    minimum_seconds: Annotated[float, Field(ge=0, le=3600, allow_inf_nan=False)] = 60.0


class CodeBuildPrices(_Strict):
    per_minute: dict[Annotated[str, Field(pattern=r"^[A-Z0-9_]{1,64}$")], Money] = Field(min_length=1)


class PriceTable(_Strict):
    """A price table as the file holds it."""

    as_of: Annotated[str, Field(pattern=r"^\d{4}-\d{2}-\d{2}$")]
    region: Annotated[str, Field(min_length=1, max_length=64)]
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
    sources: dict[str, str] = Field(default_factory=dict)
    fargate: FargatePrices
    codebuild: CodeBuildPrices

    def describe(self, source: str) -> dict[str, Any]:
        return {"as_of": self.as_of, "region": self.region, "currency": self.currency, "file": source}


def load_prices(path: FsPath | None = None) -> tuple[PriceTable, str]:
    """The price table in ``path`` (the shipped default when None), and what to call its source.
    A bad file raises ``InputError`` naming the file and the key."""
    file = path or DEFAULT_PRICES
    shown = "the default price table" if path is None else str(path)
    try:
        doc = json.loads(file.read_text())
    except OSError as exc:
        raise InputError(f"{shown}: cannot read it ({exc.strerror})") from exc
    except json.JSONDecodeError as exc:
        raise InputError(f"{shown}: not JSON ({exc.msg} at line {exc.lineno})") from exc
    try:
        return PriceTable.model_validate(doc), shown
    except ValidationError as exc:
        raise InputError(problem(shown, exc)) from exc


@dataclass(frozen=True, slots=True)
class JobShape:
    """What one unit of work is billed as: a Fargate job's size, a build's compute type."""

    vcpus: float = 2.0  # the job definition's defaults in terraform/modules/batch
    memory_gb: float = 4.0
    compute_type: str = "BUILD_GENERAL1_MEDIUM"  # terraform/modules/codebuild's default


def fargate_cost(task_seconds: Iterable[float], shape: JobShape, prices: PriceTable) -> float:
    """Fargate tasks of ``shape`` that ran the given seconds each (per second, one-minute minimum)."""
    f = prices.fargate
    per_second = (shape.vcpus * f.vcpu_hour + shape.memory_gb * f.gb_hour) / 3600.0
    return sum(max(math.ceil(s - 1e-9), f.minimum_seconds) for s in task_seconds) * per_second


def codebuild_cost(build_seconds: Iterable[float], shape: JobShape, prices: PriceTable) -> float:
    """CodeBuild builds of ``shape``'s compute type that ran the given seconds each (per minute)."""
    rate = prices.codebuild.per_minute.get(shape.compute_type)
    if rate is None:
        known = ", ".join(sorted(prices.codebuild.per_minute))
        raise InputError(f"price table: no CodeBuild price for {shape.compute_type} (it has {known})")
    return sum(max(1, math.ceil(s / 60.0 - 1e-9)) for s in build_seconds) * rate
