"""The eval report: per config side by side, the per-case disagreements, and CI gates."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from flotilla.audit.errors import ConfigError

__all__ = ["summarise", "build_report", "render_table", "parse_gates", "failed_gates", "GATE_METRICS"]

RATE_METRICS = ("accuracy", "schema_adherence", "verification_pass_rate", "escalation_rate", "needs_review_rate", "failed_rate")
GATE_METRICS = (*RATE_METRICS, "p50_ms", "p99_ms", "cost_usd", "tokens", "quality_per_dollar")


def _percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile: a value some run really took."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def _ratio(part: float, whole: float) -> float | None:
    return round(part / whole, 4) if whole else None


def summarise(records: list[dict[str, Any]]) -> dict[str, Any]:
    """One config's figures over its finished cases."""
    n = len(records)
    by_field: dict[str, list[float]] = {}
    for record in records:
        for name, score in record["scores"].items():
            by_field.setdefault(name, []).append(score)
    by_agent: dict[str, list[float]] = {}
    for name, scores in by_field.items():
        by_agent.setdefault(name.split(".", 1)[0], []).extend(scores)
    all_scores = [s for scores in by_field.values() for s in scores]
    model_steps = sum(r["model_steps"] for r in records)
    cost = sum(r["cost_usd"] for r in records)
    accuracy = _ratio(sum(all_scores), len(all_scores))
    cost_per_case = cost / n if n else 0.0
    latencies = [r["latency_ms"] for r in records]
    return {
        "cases": n,
        "accuracy": accuracy,
        "fields": {name: _ratio(sum(s), len(s)) for name, s in sorted(by_field.items())},
        "agents": {name: _ratio(sum(s), len(s)) for name, s in sorted(by_agent.items())},
        "schema_adherence": _ratio(sum(r["first_try_valid"] for r in records), model_steps),
        "verification_pass_rate": _ratio(sum(r["first_tier_verified"] for r in records), model_steps),
        "escalation_rate": _ratio(sum(1 for r in records if r["escalated"]), n),
        "needs_review_rate": _ratio(sum(1 for r in records if r["status"] == "needs_review"), n),
        "failed_rate": _ratio(sum(1 for r in records if r["status"] in ("failed", "blocked")), n),
        "p50_ms": _percentile(latencies, 50),
        "p99_ms": _percentile(latencies, 99),
        "latencies_ms": latencies,
        "input_tokens": sum(r["input_tokens"] for r in records),
        "output_tokens": sum(r["output_tokens"] for r in records),
        "tokens": sum(r["input_tokens"] + r["output_tokens"] for r in records),
        "cost_usd": round(cost, 6),
        "cost_per_case_usd": round(cost_per_case, 8),
        # Accuracy bought per dollar spent on a case; None when the config cost nothing (priced at 0).
        "quality_per_dollar": round(accuracy / cost_per_case, 2) if accuracy is not None and cost_per_case > 0 else None,
    }


def disagreements(by_config: dict[str, list[dict[str, Any]]], expected: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Cases and fields where the configs' scores differ: what each config answered."""
    if len(by_config) < 2:
        return []
    index = {name: {r["case_id"]: r for r in records} for name, records in by_config.items()}
    diffs = []
    for case_id, fields in expected.items():
        rows = {name: runs.get(case_id) for name, runs in index.items()}
        if any(r is None for r in rows.values()):
            continue
        for name, want in fields.items():
            scores = {cfg: r["scores"].get(name) for cfg, r in rows.items()}
            if len(set(scores.values())) > 1:
                diffs.append(
                    {
                        "case_id": case_id,
                        "field": name,
                        "expected": want,
                        "answers": {cfg: {"value": r["actual"].get(name), "score": scores[cfg], "status": r["status"]} for cfg, r in rows.items()},
                    }
                )
    return diffs


def build_report(
    workflow: str, dataset: str, configs: list[dict[str, str]], by_config: dict[str, list[dict[str, Any]]], expected: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    return {
        "workflow": workflow,
        "dataset": dataset,
        "configs": configs,
        "summary": {name: summarise(records) for name, records in by_config.items()},
        "disagreements": disagreements(by_config, expected),
    }


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f}%"


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value / 1000:.2f} s" if value >= 1000 else f"{value:.0f} ms"


def _usd(value: float) -> str:
    return "$0" if value == 0 else f"${value:.4f}" if value >= 0.0001 else f"${value:.2e}"


def render_table(report: dict[str, Any], console: Console, *, max_diffs: int = 10) -> None:
    summary = report["summary"]
    names = list(summary)
    table = Table(title=f"{report['workflow']} on {report['dataset']}", title_justify="left")
    table.add_column("metric")
    for name in names:
        table.add_column(escape(name), justify="right")

    def row(label: str, fmt, key: str) -> None:
        table.add_row(label, *(fmt(summary[n][key]) for n in names))

    row("cases", str, "cases")
    row("accuracy (all fields)", _pct, "accuracy")
    for agent in sorted({a for n in names for a in summary[n]["agents"]}):
        table.add_row(f"  {agent}", *(_pct(summary[n]["agents"].get(agent)) for n in names))
    for field in sorted({f for n in names for f in summary[n]["fields"]}):
        table.add_row(f"    {field}", *(_pct(summary[n]["fields"].get(field)) for n in names), style="dim")
    row("schema adherence (1st try)", _pct, "schema_adherence")
    row("verification pass (1st tier)", _pct, "verification_pass_rate")
    row("escalation rate", _pct, "escalation_rate")
    row("needs_review rate", _pct, "needs_review_rate")
    row("failed/blocked rate", _pct, "failed_rate")
    row("latency p50", _ms, "p50_ms")
    row("latency p99", _ms, "p99_ms")
    row("tokens (in+out)", lambda v: f"{v:,}", "tokens")
    row("cost", _usd, "cost_usd")
    row("quality per dollar", lambda v: "– (free)" if v is None else f"{v:,.1f}", "quality_per_dollar")
    console.print(table)
    diffs = report["disagreements"]
    if diffs:
        shown = Table(title=f"cases where the configs disagree ({len(diffs)} fields; first {min(max_diffs, len(diffs))})", title_justify="left")
        shown.add_column("case")
        shown.add_column("field")
        shown.add_column("expected")
        for name in names:
            shown.add_column(escape(name))
        for diff in diffs[:max_diffs]:
            cells = [f"{'✓' if a['score'] == 1 else '✗'} {str(a['value'])[:30]}" for a in diff["answers"].values()]
            shown.add_row(escape(diff["case_id"]), diff["field"], escape(str(diff["expected"])[:30]), *map(escape, cells))
        console.print(shown)


def parse_gates(specs: list[str]) -> list[tuple[str, str, float]]:
    """`accuracy=0.9` (at least), `p99_ms<=2000` (at most), `accuracy>=0.9`, or a field:
    `extract.total=0.95`. Bad specs are ConfigErrors saying what is accepted."""
    gates = []
    for spec in specs:
        for op in ("<=", ">=", "="):
            metric, sep, value = spec.partition(op)
            if sep:
                break
        metric = metric.strip()
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"--fail-below {spec!r}: give METRIC=NUMBER (at least), METRIC<=NUMBER or METRIC>=NUMBER") from None
        if metric not in GATE_METRICS and metric.count(".") != 1:
            raise ConfigError(f"--fail-below {spec!r}: unknown metric {metric!r}; metrics: {', '.join(GATE_METRICS)}, or a field agent.field")
        gates.append((metric, "<=" if op == "<=" else ">=", number))
    return gates


def failed_gates(report: dict[str, Any], gates: list[tuple[str, str, float]]) -> list[str]:
    """Every gate some config misses, as a sentence."""
    misses = []
    for config, figures in report["summary"].items():
        for metric, op, bound in gates:
            value = figures["fields"].get(metric) if "." in metric else figures.get(metric)
            ok = value is not None and (value <= bound if op == "<=" else value >= bound)
            if not ok:
                misses.append(f"{config}: {metric} is {value if value is not None else 'n/a'}, the gate is {op} {bound:g}")
    return misses
