"""Every benchmark runs in its ``--smoke`` setting and prints one sane JSON object, so none can rot.

No timing is asserted here: the figures depend on the machine. What is asserted is the shape of
the output, that the rates and times are positive numbers, and the benchmarks' own correctness
checks (every conversion claimed once, both sides agreeing, nothing left over).
"""

from __future__ import annotations

import json
import math
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = ROOT / "benchmarks"


def run(script: str, *args: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--smoke", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout
    doc = json.loads(lines[0])
    assert isinstance(doc, dict)
    assert doc["smoke"] is True
    assert doc["machine"]["cpus"] >= 1
    for name, g in doc["goals"].items():
        assert set(g) == {"rule", "target", "value", "met"}, name
        assert isinstance(g["met"], bool), name
        assert positive(g["value"]), name
    return doc


def positive(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def test_every_benchmark_has_a_smoke_test():
    """A new script under benchmarks/ must be added here, or it could rot unnoticed.

    ``chaos.py`` runs for a whole minute in ``test_chaos.py`` (its ``chaos_replica.py`` with it, and
    ``aws_world.py`` in its run on the AWS paths), which covers more than its ``--smoke`` setting
    would."""
    helpers = {"harness.py", "chaos_replica.py", "aws_world.py"}
    scripts = {p.name for p in BENCHMARKS.glob("*.py") if p.name not in helpers}
    assert scripts == {
        "route_claim.py",
        "flag_parse.py",
        "scale.py",
        "service_reads.py",
        "api_calls.py",
        "dynamodb_writes.py",
        "status_load.py",
        "chaos.py",
        "peak.py",
    }


def test_route_claim_measures_both_sides_and_they_agree():
    doc = run("route_claim.py")
    assert doc["benchmark"] == "route_claim"
    ours, naive = doc["ours"], doc["naive"]
    for key in ("route_claim_per_s", "route_claim_cpu_per_s", "intake_per_s", "cycle_ms", "cycles"):
        assert positive(ours[key]), key
    assert positive(naive["per_s"])
    assert 0 < naive["measured_conversions"] <= doc["inputs"]["conversions"]
    assert doc["ratio"] == pytest.approx(ours["route_claim_per_s"] / naive["per_s"], rel=0.05)
    assert positive(doc["ratio_cpu"])
    assert set(doc["goals"]) == {"route_claim_per_s", "ratio_to_naive"}
    assert doc["checks"] == {"all_claimed": True, "new_path_matches_flag": True, "naive_agrees": True}


def test_flag_parse_times_each_size_on_both_sides():
    doc = run("flag_parse.py")
    assert doc["benchmark"] == "flag_parse"
    assert [row["ids"] for row in doc["sizes"]] == [1_000, 10_000, 100_000]
    for row in doc["sizes"]:
        assert positive(row["ours_ms"])
        assert positive(row["naive_ms"])
        assert row["bytes"] > row["ids"]
        assert row["same_result"] is True
    assert "naive_is" in doc
    forms = doc["forms_at_100000_ids"]
    assert set(forms) == {"agent answer (?flag=)", "values form (file)", "definition document"}
    assert all(positive(f["ms"]) and f["bytes"] > 100_000 for f in forms.values())


def test_scale_runs_conversions_to_the_end_and_plots(tmp_path):
    svg, png = tmp_path / "scale.svg", tmp_path / "scale.png"
    doc = run("scale.py", "--plot", str(svg), "--plot", str(png))
    assert doc["benchmark"] == "scale"
    assert positive(doc["peak_rss_mb"])
    assert len(doc["cycle_ms"]) >= 2
    sizes = [row["records"] for row in doc["cycle_ms"]]
    assert sizes == sorted(sizes)
    assert sizes[-1] == doc["inputs"]["conversions"]
    for row in doc["cycle_ms"]:
        assert positive(row["wall_ms"])
        assert positive(row["cpu_ms"])
    checks = doc["checks"]
    assert checks["all_succeeded"] is True
    assert checks["nothing_left_over"] is True
    assert checks["submitted_once_each"] is True
    assert checks["query_plans"]["full_scans"] == []
    assert svg.read_text().startswith("<svg")
    assert doc["plots"] == [str(svg), str(png)]
    width, height = png_size(png.read_bytes())
    assert 400 <= width <= 2000
    assert 300 <= height <= 1500
    assert 10_000 < png.stat().st_size < 1_000_000


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height of a PNG, after checking its signature, its header chunk and its end chunk."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert (length, kind) == (13, b"IHDR")
    assert zlib.crc32(data[12:29]) == struct.unpack(">I", data[29:33])[0]
    assert data[-12:] == b"\x00\x00\x00\x00IEND\xaeB`\x82"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_service_reads_times_every_read_endpoint():
    doc = run("service_reads.py")
    assert doc["benchmark"] == "service_reads"
    assert doc["records"] >= 20_000
    assert {"/healthz", "/readyz", "/status", "/metrics", "/"} <= set(doc["endpoints"])
    for url, figures in doc["endpoints"].items():
        assert positive(figures["p50_ms"]), url
        assert figures["p50_ms"] <= figures["max_ms"], url
    assert positive(doc["refresh"]["p50_ms"])
    assert doc["refresh"]["p50_ms"] <= doc["refresh"]["max_ms"]


def test_dynamodb_writes_prices_every_phase_of_a_conversions_life():
    """Each conversion is written once per step of its life, and the counters ride along per batch."""
    doc = run("dynamodb_writes.py")
    assert doc["benchmark"] == "dynamodb_writes"
    n = doc["inputs"]["conversions"]
    phases, per = doc["phases"], doc["per_conversion"]
    assert set(phases) == set(per) == {"intake", "route_claim", "the_rest"}
    # intake puts each conversion; the claim updates each; the rest moves each three times
    for name, writes in (("intake", 1), ("route_claim", 1), ("the_rest", 3)):
        assert phases[name]["items"]["conv"] == writes * n, name
        assert phases[name]["largest_item_kb"]["conv"] == 1, name  # the units assume items under 1 KB
        assert per[name]["table_wru"] >= 2 * writes, name  # transactional: 2 units per item
        assert per[name]["counter_and_decision_items"] < 0.5, name  # per batch, not per conversion
        assert per[name]["total_wru"] == pytest.approx(
            per[name]["table_wru"] + per[name]["index_wru"], abs=0.002
        )
    assert doc["life_total_wru_per_conversion"] == pytest.approx(
        sum(p["total_wru"] for p in per.values()), abs=0.01
    )
    assert set(doc["goals"]) == {"route_claim_table_wru_per_conversion"}
    assert doc["checks"] == {"all_claimed": True, "all_succeeded": True, "new_path_count_matches_flag": True}


def test_api_calls_counts_every_call_of_both_sides_on_both_paths():
    doc = run("api_calls.py")
    assert doc["benchmark"] == "api_calls"
    n = doc["inputs"]["conversions"]
    for path, submit, track in (
        ("new_path", "batch:SubmitJob", "batch:DescribeJobs"),
        ("legacy_path", "codebuild:StartBuild", "codebuild:BatchGetBuilds"),
    ):
        sides = doc[path]
        for name in ("ours_burst", "ours_stream", "naive"):
            side = sides[name]
            assert side["succeeded"] == n, (path, name)
            assert side["total_calls"] == sum(side["calls"].values()), (path, name)
            assert side["total_calls"] == (
                side["submission_calls"] + side["tracking_calls"] + side["capacity_calls"]
            ), (path, name)
            assert side["per_1000"]["total"] == pytest.approx(side["total_calls"] * 1000 / n, abs=0.001)
        # the naive side: one submission and one look per conversion, nothing else
        assert sides["naive"]["calls"] == {submit: n, track: n}
        # ours: one job or build per cycle that had new work
        assert sides["ours_burst"]["calls"][submit] == 1
        cycles_with_arrivals = -(-n // doc["inputs"]["stream_per_cycle"])
        assert sides["ours_stream"]["calls"][submit] == cycles_with_arrivals
        assert sides["ratio_burst"]["submission"] == pytest.approx(
            sides["naive"]["submission_calls"] / sides["ours_burst"]["submission_calls"], rel=0.01
        )
    assert set(doc["goals"]) == {
        "new_path_submission_calls_per_1000_burst",
        f"new_path_submission_calls_per_1000_stream_of_{doc['inputs']['stream_per_cycle']}",
    }
    assert doc["checks"] == {"all_succeeded": True, "no_cycle_errors": True}


def test_status_load_measures_both_endpoints_before_and_during_the_burst():
    doc = run("status_load.py")
    assert doc["benchmark"] == "status_load"
    assert doc["inputs"]["generator"] in ("wrk", "httpx")
    for name in ("before", "during"):
        window = doc[name]
        assert set(window["endpoints"]) == {"/status", "/healthz"}
        for url, figures in window["endpoints"].items():
            assert figures["requests"] > 0, (name, url)
            assert positive(figures["requests_per_s"]), (name, url)
            assert 0 < figures["p50_ms"] <= figures["p99_ms"] <= figures["max_ms"], (name, url)
        assert positive(window["cpu_seconds"]["controller"]), name
        split = window["controller_cpu_split"]["cpu_seconds"]
        assert set(split) == {"main_thread", "other_threads"}, name
        assert all(v >= 0 for v in split.values()), name
    burst = doc["during"]["burst"]
    assert burst["accepted"] == doc["inputs"]["conversions"]
    assert 0 <= burst["routed_by_window_end"] <= burst["accepted"]
    assert set(doc["goals"]) == {"status_p99_ms_during_burst", "healthz_p99_ms_during_burst"}
    checks = doc["checks"]
    assert checks["all_accepted"] is True
    assert checks["all_succeeded"] is True
    assert checks["only_ok_answers"] is True


def test_peak_compares_the_policies_against_the_bounds_and_keeps_the_budget():
    """Every policy ran the same conversions; cutover's admission and the 50/50 split stay within
    the budget while the reference setup runs two budgets' worth; nothing beats the bound."""
    doc = run("peak.py")
    assert doc["benchmark"] == "peak"
    bound = doc["bound"]
    for key in (
        "total_work_seconds",
        "bound_seconds",
        "bound_with_provisioning_seconds",
        "list_schedule_seconds",
    ):
        assert positive(bound[key]), key
    assert bound["bound_with_provisioning_seconds"] >= bound["bound_seconds"]
    policies = doc["policies"]
    assert set(policies) == {"cutover", "reference_static", "static_half"}
    budget = doc["inputs"]["budget"]
    for name, figures in policies.items():
        assert figures["ratio_to_bound"] >= 1.0 or name == "reference_static", name
        assert 0 < figures["utilisation_while_work_waits"] <= 2.0, name
    assert policies["cutover"]["peak_in_flight"]["total"] <= budget
    assert policies["static_half"]["peak_in_flight"]["total"] <= budget
    assert policies["reference_static"]["over_budget_by"] > 0
    assert set(doc["goals"]) == {"ratio_to_bound_with_provisioning", "cpu_seconds_per_1000_conversions"}
    assert doc["checks"] == {
        "cutover_within_budget": True,
        "static_half_within_budget": True,
        "cutover_every_conversion_succeeded": True,
    }
