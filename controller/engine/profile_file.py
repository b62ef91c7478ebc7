"""A forecast profile given as a file of distributions (``cutover forecast --profile FILE``).

YAML (or JSON for ``.json``)::

    name: month-start
    defaults:                       # per path; p99 at least the median
      legacy: {median_seconds: 60, p99_seconds: 1200, failure_rate: 0.01}
      new:    {median_seconds: 60, p99_seconds: 1200}
    tenants:                        # optional, per tenant and path
      "1001": {new: {median_seconds: 30, p99_seconds: 300}}
    provisioning_seconds:           # optional: a number, or [low, high] spread evenly
      legacy: 60
      new: [30, 120]
    arrivals:                       # either a spread ...
      conversions: 10000
      tenants: ["1001-1200"]        # ids and ranges, as in the rollout plan
      within_seconds: 300
      skew: 1.0                     # 0: every tenant alike; above: a few busy, many quiet
    # ... or a list: [{tenant_id: 1001, at_seconds: 0, count: 5}, ...]
    jobs:                           # optional: what a unit of work is billed as
      vcpus: 2
      memory_gb: 4
      codebuild_compute_type: BUILD_GENERAL1_MEDIUM

Every value is checked; a bad one raises ``InputError`` naming the file and its key. Reading and
validating only.
"""

from __future__ import annotations

from pathlib import Path as FsPath
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from controller.core.domain import Path
from controller.core.errors import InputError
from controller.engine.pricing import JobShape
from controller.engine.profile import (
    DEFAULT_PROVISIONING,
    Arrival,
    Behaviour,
    Durations,
    Profile,
    Span,
    spread,
)
from controller.engine.validation import problem
from flags.docfile import read_document
from flags.rollout import parse_entry

Seconds = Annotated[float, Field(gt=0, le=7 * 86400, allow_inf_nan=False)]
Delay = Annotated[float, Field(ge=0, le=3600, allow_inf_nan=False)]
MAX_CONVERSIONS = 1_000_000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BehaviourSpec(_Strict):
    median_seconds: Seconds
    p99_seconds: Seconds
    failure_rate: Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)] = 0.0

    @model_validator(mode="after")
    def _ordered(self) -> BehaviourSpec:
        if self.p99_seconds < self.median_seconds:
            raise ValueError("p99_seconds must be at least median_seconds")
        return self

    def behaviour(self) -> Behaviour:
        return Behaviour(Durations(self.median_seconds, self.p99_seconds), self.failure_rate)


class PathsSpec(_Strict):
    legacy: BehaviourSpec | None = None
    new: BehaviourSpec | None = None


class DefaultsSpec(_Strict):
    legacy: BehaviourSpec
    new: BehaviourSpec


class ProvisioningSpec(_Strict):
    legacy: Delay | tuple[Delay, Delay] | None = None
    new: Delay | tuple[Delay, Delay] | None = None


class SpreadSpec(_Strict):
    conversions: Annotated[int, Field(ge=1, le=MAX_CONVERSIONS)]
    tenants: list[int | str] = Field(min_length=1)
    within_seconds: Annotated[float, Field(ge=0, le=7 * 86400, allow_inf_nan=False)] = 0.0
    skew: Annotated[float, Field(ge=0, le=5, allow_inf_nan=False)] = 0.0
    seed: int = 0


class ArrivalSpec(_Strict):
    tenant_id: Annotated[int, Field(ge=1)]
    at_seconds: Annotated[float, Field(ge=0, le=7 * 86400, allow_inf_nan=False)] = 0.0
    count: Annotated[int, Field(ge=1, le=MAX_CONVERSIONS)] = 1


class JobsSpec(_Strict):
    vcpus: Annotated[float, Field(gt=0, le=16, allow_inf_nan=False)] = 2.0
    memory_gb: Annotated[float, Field(gt=0, le=120, allow_inf_nan=False)] = 4.0
    codebuild_compute_type: Annotated[str, Field(pattern=r"^[A-Z0-9_]{1,64}$")] = "BUILD_GENERAL1_MEDIUM"


class ProfileSpec(_Strict):
    name: Annotated[str, Field(min_length=1, max_length=64)] = "profile"
    defaults: DefaultsSpec
    tenants: dict[Annotated[int, Field(ge=1)], PathsSpec] = Field(default_factory=dict)
    provisioning_seconds: ProvisioningSpec = Field(default_factory=ProvisioningSpec)
    arrivals: dict[str, Any] | list[Any]  # a spread or a list; checked on its own, see _arrivals
    jobs: JobsSpec = Field(default_factory=JobsSpec)


_ARRIVAL_LIST = TypeAdapter(Annotated[list[ArrivalSpec], Field(min_length=1)])


def load_profile(path: FsPath) -> tuple[Profile, JobShape]:
    """The profile in ``path`` and the job shape it bills; ``InputError`` names what is wrong."""
    source = f"profile {path}"
    return parse_profile(read_document(path, source), source, str(path))


def parse_profile(doc: Any, source: str, origin: str = "file") -> tuple[Profile, JobShape]:
    """Validate a profile document (already parsed) and build the profile it describes."""
    if not isinstance(doc, dict):
        raise InputError(f"{source}: expected a mapping with defaults and arrivals")
    try:
        spec = ProfileSpec.model_validate(doc)
    except ValidationError as exc:
        raise InputError(problem(source, exc)) from exc
    arrivals = _arrivals(spec.arrivals, source)
    tenants = {
        t: {
            p: b.behaviour() for p, b in ((Path.LEGACY, paths.legacy), (Path.NEW, paths.new)) if b is not None
        }
        for t, paths in spec.tenants.items()
    }
    provisioning = dict(DEFAULT_PROVISIONING)
    for path, given in (
        (Path.LEGACY, spec.provisioning_seconds.legacy),
        (Path.NEW, spec.provisioning_seconds.new),
    ):
        if given is not None:
            low, high = given if isinstance(given, tuple) else (given, given)
            provisioning[path] = Span(min(low, high), max(low, high))
    profile = Profile(
        name=spec.name,
        source=origin,
        default={Path.LEGACY: spec.defaults.legacy.behaviour(), Path.NEW: spec.defaults.new.behaviour()},
        arrivals=tuple(arrivals),
        tenants=tenants,
        provisioning=provisioning,
    )
    jobs = spec.jobs
    return profile, JobShape(jobs.vcpus, jobs.memory_gb, jobs.codebuild_compute_type)


def _arrivals(raw: dict[str, Any] | list[Any], source: str) -> list[Arrival]:
    """A list of arrivals, or a spread of conversions over tenants and time."""
    try:
        if isinstance(raw, list):
            listed = _ARRIVAL_LIST.validate_python(raw)
            if sum(a.count for a in listed) > MAX_CONVERSIONS:
                raise InputError(f"{source}: arrivals: more than {MAX_CONVERSIONS:,} conversions")
            return sorted((Arrival(a.at_seconds, a.tenant_id, a.count) for a in listed), key=lambda a: a.at)
        spec = SpreadSpec.model_validate(raw)
    except ValidationError as exc:
        raise InputError(problem(source, exc, "arrivals")) from exc
    ids: set[int] = set()
    for i, entry in enumerate(spec.tenants):
        ids.update(parse_entry(entry, f"{source}: arrivals.tenants.{i}"))
    return spread(spec.conversions, sorted(ids), spec.within_seconds, spec.seed, spec.skew)
