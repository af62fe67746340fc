"""Per-specialist metrics: real runs through the runner (scripted tiers), then `flotilla stats`
figures checked against the same figures recomputed here from the raw span records, the live
Prometheus and OTLP metrics checked against them, and `flotilla stats` itself from the CLI."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from prometheus_client.parser import text_string_to_metric_families

from flotilla.agents.models.testing import FunctionModel
from flotilla.audit import semconv as sc
from flotilla.audit.exporter import AuditSpanExporter
from flotilla.audit.metrics import FlotillaMetrics
from flotilla.audit.sanitize import Sanitizer
from flotilla.audit.stats import specialist_stats, trend
from flotilla.audit.store import AuditStore
from flotilla.audit.telemetry import Telemetry
from tests.audit.otlp_receiver import OtlpReceiver, attrs_of
from tests.graphs.tiers import DEGENERATE, GOOD, TierHarness, write_workflow

# (specialist replies, frontier replies) per run: what each tier says, in order.
SCRIPTS: list[tuple[list[Any], list[Any]]] = [
    ([GOOD], []),  # first try, in schema, verified
    (["not json", "not json"], [GOOD]),  # repaired, still invalid: escalated to the frontier
    ([DEGENERATE], [GOOD]),  # in schema, fails verification: escalated to the frontier
    ([DEGENERATE], [DEGENERATE]),  # no tier passes: needs_review
    (["not json", GOOD], []),  # repaired in place
]


def scripted(name: str, replies: list[Any]) -> FunctionModel:
    def respond(request: Any) -> str:
        reply = replies.pop(0)
        return reply if isinstance(reply, str) else json.dumps(reply)

    return FunctionModel(respond, name=name)


def run_scripts(tmp: Path, telemetry: Telemetry) -> list[str]:
    """Every script through the real runner (one agent, tiers [specialist, frontier]); the run ids."""
    import asyncio

    small, frontier = [], []
    h = TierHarness(tmp, {"specialist": scripted("small", small), "frontier": scripted("frontier-model", frontier)}, telemetry=telemetry)
    workflow = write_workflow(tmp, model=["specialist", "frontier"])

    async def go() -> list[str]:
        ids = []
        for first, second in SCRIPTS:
            small[:], frontier[:] = list(first), list(second)
            ids.append((await h.run(workflow)).run_id)
        await h.runner.aclose()
        return ids

    try:
        return asyncio.run(go())
    finally:
        telemetry.flush()


@pytest.fixture
def recorded(store: AuditStore, tmp_path: Path) -> Iterator[tuple[AuditStore, FlotillaMetrics, list[str]]]:
    metrics = FlotillaMetrics(otlp=False)
    telemetry = Telemetry((), metrics=metrics)
    telemetry.provider.add_span_processor(SimpleSpanProcessor(AuditSpanExporter(store, Sanitizer("off"))))
    ids = run_scripts(tmp_path, telemetry)
    yield store, metrics, ids
    telemetry.shutdown()


def recompute(spans: list[dict[str, Any]]) -> dict[tuple[str, ...], dict[str, Any]]:
    """The figures, recomputed in Python from raw span payloads (nearest-rank percentiles)."""
    out: dict[tuple[str, ...], dict[str, Any]] = defaultdict(lambda: defaultdict(int, escalated_to=Counter(), errors=Counter(), durations=[]))
    for span in spans:
        a = span["attributes"]
        if a.get(sc.OPERATION) not in ("invoke_agent", "chat"):
            continue
        key = (a.get(sc.WORKFLOW, ""), a.get(sc.AGENT_NAME, ""), a.get(sc.MODEL_ALIAS, ""), a.get(sc.MODEL_ADAPTER) or a.get("gen_ai.request.model", ""))
        row = out[key]
        if a.get(sc.OPERATION) == "invoke_agent":
            row["requests"] += 1
            row["first_try_checked"] += sc.STEP_FIRST_TRY_VALID in a
            row["first_try_valid"] += a.get(sc.STEP_FIRST_TRY_VALID) is True
            row["repairs"] += a.get(sc.STEP_REPAIRS, 0)
            row["verified"] += a.get(sc.STEP_VERIFIED, 0)
            row["verified_passed"] += a.get(sc.STEP_VERIFIED_PASSED, 0)
            if a.get(sc.STEP_ESCALATED):
                row["escalated"] += 1
                row["escalated_to"][a[sc.STEP_TIER]] += 1
            if span["status"] == "ERROR":
                row["errors"][a.get("error.type", "error")] += 1
            row["durations"].append((span["end"] - span["start"]) / 1e6)
        elif a.get(sc.OPERATION) == "chat":
            row["calls"] += 1
            row["input_tokens"] += a.get("gen_ai.usage.input_tokens", 0)
            row["output_tokens"] += a.get("gen_ai.usage.output_tokens", 0)
    for row in out.values():
        ranked = sorted(row.pop("durations"))
        row["latency_ms"] = {f"p{p}": ranked[math.ceil(p * len(ranked) / 100) - 1] if ranked else None for p in (50, 95, 99)}
    return out


def test_stats_equal_the_figures_recomputed_from_the_raw_spans(recorded) -> None:
    store, _, ids = recorded
    spans = [r.payload for run_id in ids for r in store.run_records(run_id) if r.kind == "span"]
    expected = recompute(spans)
    stats = {s.key: s for s in specialist_stats(store)}
    assert set(stats) == set(expected)
    for key, row in expected.items():
        got = stats[key]
        for name in ("requests", "first_try_checked", "first_try_valid", "repairs", "verified", "verified_passed", "escalated", "calls", "input_tokens", "output_tokens"):
            assert getattr(got, name) == row[name], (key, name)
        assert got.escalated_to == dict(row["escalated_to"]) and got.errors == dict(row["errors"])
        assert got.latency_ms == row["latency_ms"], key

    # And what the scripts were written to produce: the specialist row of the `decide` agent.
    decide = stats[("tiered", "decide", "specialist", "small")]
    assert (decide.requests, decide.first_try_valid, decide.first_try_checked) == (5, 3, 5)
    assert (decide.repairs, decide.verified, decide.verified_passed) == (2, 7, 4)
    assert decide.escalation_rate == pytest.approx(3 / 5) and decide.escalated_to == {"frontier": 2, "needs_review": 1}
    assert decide.errors == {"NeedsReview": 1}
    frontier = stats[("tiered", "decide", "frontier", "frontier-model")]
    assert frontier.requests == 0 and frontier.calls == 3  # the frontier's calls show on its own row

    [day] = trend(store, "tiered")
    assert day.requests == 5 and day.first_try_rate == pytest.approx(3 / 5) and day.escalation_rate == pytest.approx(3 / 5)
    assert specialist_stats(store, workflow="no-such-workflow") == []


def test_prometheus_text_has_the_same_figures(recorded) -> None:
    store, metrics, _ = recorded
    families = {f.name: f for f in text_string_to_metric_families(metrics.prometheus_text().decode())}
    labels = {"flotilla_workflow": "tiered", "gen_ai_agent_name": "decide", "flotilla_model_alias": "specialist"}

    def total(family: str, **extra: str) -> float:
        return sum(s.value for s in families[family].samples
                   if s.name.endswith("_total") and all(s.labels.get(k) == v for k, v in {**labels, **extra}.items()))

    [decide] = [s for s in specialist_stats(store) if s.alias == "specialist"]
    assert total("flotilla_agent_requests") == decide.requests
    assert total("flotilla_agent_schema_first_try", flotilla_result="pass") == decide.first_try_valid
    assert total("flotilla_agent_repairs") == decide.repairs
    assert total("flotilla_agent_verifications", flotilla_result="fail") == decide.verified - decide.verified_passed
    assert total("flotilla_agent_escalations", flotilla_step_tier="needs_review") == 1
    assert total("flotilla_agent_errors", error_type="NeedsReview") == 1
    duration = families["gen_ai_client_operation_duration_seconds"]
    counts = [s for s in duration.samples if s.name.endswith("_count")]
    assert sum(s.value for s in counts) == sum(s.calls for s in specialist_stats(store))
    assert {s.labels["gen_ai_operation_name"] for s in counts} == {"chat"}
    tokens = families["gen_ai_client_token_usage"]
    assert {s.labels["gen_ai_token_type"] for s in tokens.samples if s.name.endswith("_sum")} == {"input", "output"}


def test_otlp_metrics_reach_the_endpoint_the_traces_use(tmp_path: Path, sqlite_store: AuditStore, monkeypatch: pytest.MonkeyPatch) -> None:
    with OtlpReceiver() as receiver:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        telemetry = Telemetry((), metrics=FlotillaMetrics(prometheus=False))
        run_scripts(tmp_path, telemetry)
        telemetry.shutdown()  # the last collection goes out on shutdown
    by_name = defaultdict(list)
    for metric in receiver.metrics():
        by_name[metric.name].append(metric)
    duration = by_name["gen_ai.client.operation.duration"][-1]
    assert duration.unit == "s"
    points = duration.histogram.data_points
    assert sum(p.count for p in points) == 10  # 1 + 3 + 2 + 2 + 2 model calls
    assert {attrs_of(p)["gen_ai.operation.name"] for p in points} == {"chat"}
    assert {attrs_of(p)[sc.MODEL_ALIAS] for p in points} == {"specialist", "frontier"}
    usage = by_name["gen_ai.client.token.usage"][-1]
    assert usage.unit == "{token}" and {attrs_of(p)["gen_ai.token.type"] for p in usage.histogram.data_points} == {"input", "output"}
    requests = by_name["flotilla.agent.requests"][-1]
    assert sum(p.as_int for p in requests.sum.data_points) == len(SCRIPTS)


def test_flotilla_stats_cli_prints_the_table_and_json(recorded, tmp_path: Path) -> None:
    store, _, _ = recorded  # SQLite and PostgreSQL: the CLI computes from whichever store is configured
    env = {**os.environ, "FLOTILLA_AUDIT_URL": store.url, "FLOTILLA_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "200"}
    as_json = subprocess.run([sys.executable, "-m", "flotilla.runtime", "stats", "--json", "--since", "7d"],
                             capture_output=True, text=True, env=env, cwd=tmp_path, check=False)
    assert as_json.returncode == 0, as_json.stderr
    rows = {(r["agent"], r["alias"]): r for r in json.loads(as_json.stdout)["specialists"]}
    assert rows[("decide", "specialist")]["requests"] == 5 and rows[("decide", "specialist")]["escalated_to"] == {"frontier": 2, "needs_review": 1}
    table = subprocess.run([sys.executable, "-m", "flotilla.runtime", "stats", "--workflow", "tiered"],
                           capture_output=True, text=True, env=env, cwd=tmp_path, check=False)
    assert table.returncode == 0 and "decide" in table.stdout and "60%" in table.stdout  # first-try adherence 3/5
    bad = subprocess.run([sys.executable, "-m", "flotilla.runtime", "stats", "--since", "seven days"],
                         capture_output=True, text=True, env=env, cwd=tmp_path, check=False)
    assert bad.returncode == 2 and "--since" in bad.stderr and "Traceback" not in bad.stderr
