"""The price table and the billing arithmetic: Fargate per second with a minute's minimum,
CodeBuild per started minute; a bad table or profile file is refused by the key at fault."""

from __future__ import annotations

import json

import pytest

from controller.core.domain import Path
from controller.core.errors import InputError
from controller.engine.pricing import DEFAULT_PRICES, JobShape, codebuild_cost, fargate_cost, load_prices
from controller.engine.profile import Durations, Span
from controller.engine.profile_file import parse_profile

TABLE, _ = load_prices()
TWO_BY_FOUR = JobShape(vcpus=2.0, memory_gb=4.0, compute_type="BUILD_GENERAL1_MEDIUM")
PER_SECOND = (2 * 0.04048 + 4 * 0.004445) / 3600


def test_the_shipped_table_is_dated_sourced_and_in_dollars():
    doc = json.loads(DEFAULT_PRICES.read_text())
    assert doc["as_of"] == TABLE.as_of == "2026-06-01"
    assert TABLE.currency == "USD"
    assert TABLE.region == "us-east-1"
    assert "aws.amazon.com/fargate/pricing" in TABLE.sources["fargate"]
    assert "aws.amazon.com/codebuild/pricing" in TABLE.sources["codebuild"]


@pytest.mark.parametrize(
    ("seconds", "billed"),
    [
        pytest.param([1.0], 60, id="a-second-costs-a-minute"),
        pytest.param([59.9], 60, id="under-a-minute-costs-a-minute"),
        pytest.param([60.0], 60, id="a-minute"),
        pytest.param([60.2], 61, id="then-per-started-second"),
        pytest.param([3600.0, 30.0], 3660, id="each-task-billed-on-its-own"),
        pytest.param([], 0, id="no-task"),
    ],
)
def test_fargate_bills_each_task_per_second_with_a_one_minute_minimum(seconds, billed):
    assert fargate_cost(seconds, TWO_BY_FOUR, TABLE) == pytest.approx(billed * PER_SECOND)


def test_a_two_vcpu_four_gb_task_for_an_hour_costs_the_hourly_rates():
    assert fargate_cost([3600.0], TWO_BY_FOUR, TABLE) == pytest.approx(2 * 0.04048 + 4 * 0.004445)


@pytest.mark.parametrize(
    ("seconds", "minutes"),
    [
        pytest.param([1.0], 1, id="a-second-is-a-minute"),
        pytest.param([60.0], 1, id="a-minute"),
        pytest.param([60.5], 2, id="a-started-minute-counts-whole"),
        pytest.param([7200.0, 61.0], 122, id="each-build-rounded-up"),
    ],
)
def test_codebuild_bills_each_build_per_started_minute(seconds, minutes):
    assert codebuild_cost(seconds, TWO_BY_FOUR, TABLE) == pytest.approx(minutes * 0.01)


def test_a_compute_type_the_table_does_not_price_is_named():
    with pytest.raises(InputError, match="no CodeBuild price for BUILD_GENERAL1_2XLARGE"):
        codebuild_cost([60.0], JobShape(compute_type="BUILD_GENERAL1_2XLARGE"), TABLE)


def test_a_table_file_replaces_the_shipped_one(tmp_path):
    doc = json.loads(DEFAULT_PRICES.read_text())
    doc["fargate"]["vcpu_hour"] = 1.0
    doc["fargate"]["gb_hour"] = 0.0
    (tmp_path / "prices.json").write_text(json.dumps(doc))
    table, source = load_prices(tmp_path / "prices.json")
    assert source == str(tmp_path / "prices.json")
    assert fargate_cost([3600.0], JobShape(vcpus=1.0, memory_gb=8.0), table) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("change", "says"),
    [
        pytest.param(
            lambda d: d["fargate"].update(vcpu_hour=-1),
            "fargate.vcpu_hour: Input should be greater than or equal to 0",
            id="negative-price",
        ),
        pytest.param(lambda d: d.update(as_of="June"), "as_of: String should match pattern", id="undated"),
        pytest.param(
            lambda d: d["codebuild"].update(per_minute={}), "codebuild.per_minute: ", id="no-codebuild-price"
        ),
        pytest.param(
            lambda d: d.update(currency="dollars"), "currency: String should match pattern", id="bad-currency"
        ),
        pytest.param(
            lambda d: d["fargate"].update(cpu_hour=1),
            "fargate.cpu_hour: Extra inputs are not permitted",
            id="unknown-key",
        ),
        pytest.param(lambda d: d.pop("fargate"), "fargate: Field required", id="missing-section"),
    ],
)
def test_a_bad_table_is_refused_naming_the_file_and_the_key(tmp_path, change, says):
    doc = json.loads(DEFAULT_PRICES.read_text())
    change(doc)
    (tmp_path / "prices.json").write_text(json.dumps(doc))
    with pytest.raises(InputError) as caught:
        load_prices(tmp_path / "prices.json")
    assert str(caught.value).startswith(f"{tmp_path / 'prices.json'}: ")
    assert says in str(caught.value)


def test_an_unreadable_table_says_so(tmp_path):
    (tmp_path / "prices.json").write_text("{nope")
    with pytest.raises(InputError, match="not JSON"):
        load_prices(tmp_path / "prices.json")
    with pytest.raises(InputError, match="cannot read it"):
        load_prices(tmp_path / "missing.json")


PROFILE = {
    "name": "month-start",
    "defaults": {
        "legacy": {"median_seconds": 60, "p99_seconds": 1200, "failure_rate": 0.01},
        "new": {"median_seconds": 40, "p99_seconds": 600},
    },
    "tenants": {"1001": {"new": {"median_seconds": 30, "p99_seconds": 300}}},
    "provisioning_seconds": {"legacy": 50, "new": [20, 90]},
    "arrivals": {"conversions": 500, "tenants": ["1001-1010", 1020], "within_seconds": 120, "skew": 1.0},
    "jobs": {"vcpus": 1, "memory_gb": 2, "codebuild_compute_type": "BUILD_GENERAL1_SMALL"},
}


def test_a_profile_file_gives_distributions_arrivals_and_the_job_shape():
    profile, shape = parse_profile(PROFILE, "profile p.yaml")
    assert profile.conversions == 500
    assert profile.tenant_ids <= set(range(1001, 1011)) | {1020}
    assert max(a.at for a in profile.arrivals) <= 120
    assert profile.behaviour(1001, Path.NEW).durations == Durations(30.0, 300.0)
    assert profile.behaviour(1002, Path.NEW).durations == Durations(40.0, 600.0)
    # a tenant seen only on one path: the other path's durations, scaled by the paths' medians
    assert profile.behaviour(1001, Path.LEGACY).durations == Durations(45.0, 450.0)
    assert profile.behaviour(1002, Path.LEGACY).failure_rate == 0.01
    assert profile.provisioning == {Path.LEGACY: Span(50.0, 50.0), Path.NEW: Span(20.0, 90.0)}
    assert shape == JobShape(1.0, 2.0, "BUILD_GENERAL1_SMALL")


def test_log_normal_quantiles_meet_the_median_and_the_p99():
    d = Durations(60.0, 1200.0)
    assert d.quantile(0.5) == pytest.approx(60.0)
    assert d.quantile(0.99) == pytest.approx(1200.0)
    assert Durations.of([3.0, 1.0, 2.0]).quantile(0.5) == 2.0


def _set(path: str, value):
    def change(doc):
        *parents, last = path.split(".")
        node = doc
        for p in parents:
            node = node[p]
        node[last] = value

    return change


@pytest.mark.parametrize(
    ("change", "says"),
    [
        pytest.param(
            _set("defaults.new.p99_seconds", 10),
            "defaults.new: p99_seconds must be at least median_seconds",
            id="p99-below-median",
        ),
        pytest.param(
            _set("defaults.legacy.median_seconds", 0),
            "defaults.legacy.median_seconds: Input should be greater than 0",
            id="zero-median",
        ),
        pytest.param(
            _set("defaults.legacy.failure_rate", 1.5),
            "defaults.legacy.failure_rate: Input should be less than 1",
            id="failure-rate",
        ),
        pytest.param(
            _set("arrivals.conversions", 0),
            "arrivals.conversions: Input should be greater than or equal to 1",
            id="no-conversions",
        ),
        pytest.param(
            _set("arrivals.tenants", ["1001-x"]),
            "arrivals.tenants.0: '1001-x' is neither",
            id="bad-tenant-range",
        ),
        pytest.param(
            _set("provisioning_seconds.new", -5), "provisioning_seconds.new", id="negative-provisioning"
        ),
        pytest.param(
            _set("tenants.1001.new.median_seconds", "soon"),
            "tenants.1001.new.median_seconds",
            id="not-a-number",
        ),
        pytest.param(
            _set("jobs.codebuild_compute_type", "medium"),
            "jobs.codebuild_compute_type",
            id="bad-compute-type",
        ),
        pytest.param(
            _set("defaults.old", {}), "defaults.old: Extra inputs are not permitted", id="unknown-key"
        ),
    ],
)
def test_a_bad_profile_is_refused_naming_its_key(change, says):
    doc = json.loads(json.dumps(PROFILE))
    change(doc)
    with pytest.raises(InputError) as caught:
        parse_profile(doc, "profile p.yaml")
    assert str(caught.value).startswith("profile p.yaml: ")
    assert says in str(caught.value)
