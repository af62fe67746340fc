"""Evaluation sets for the injection classifier and the tool-result screen (bench_guardrails.py).

Tool results: ordinary documents (the documents server's corpus, the sample invoice), ledger rows
(the ledger server's seed data, one JSON row per result, as its tools return them), and e-mails and
issue texts from inspect-evals' AgentThreatBench / IPI coding-agent sets — each benign, and each
with an injection inside (the same documents with one of flotilla's `indirect` injections pasted
in the middle, the benchmarks' own attack e-mails and poisoned issues/READMEs).
"""

from __future__ import annotations

import json
import sqlite3
import zipfile
from pathlib import Path

from flotilla.guardrails.training.corpus import data_lines, find_inspect_evals_wheel

ROOT = Path(__file__).resolve().parents[1]


def ledger_rows() -> list[str]:
    db = sqlite3.connect(":memory:")
    db.executescript((ROOT / "mcp_servers" / "ledger" / "seed.sql").read_text())
    db.row_factory = sqlite3.Row
    tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    return [json.dumps(dict(row)) for t in tables for row in db.execute(f"SELECT * FROM {t}")]  # noqa: S608 (own table names)


def documents() -> list[str]:
    docs = [p.read_text() for p in sorted((ROOT / "mcp_servers" / "documents" / "corpus").glob("*.md"))]
    return docs + [(ROOT / "graphs" / "samples" / "invoice.txt").read_text()]


def _benchmarks() -> tuple[list[str], list[str]]:
    """(benign, injected) e-mails and coding-agent inputs from the inspect-evals wheel."""
    benign, injected = [], []
    with zipfile.ZipFile(find_inspect_evals_wheel()) as zf:
        hijack = json.loads(zf.read("inspect_evals/agent_threat_bench/data/autonomy_hijack.json"))
        for case in hijack:
            for i, mail in enumerate(case["inbox"]):
                text = f"From: {mail['from']}\nSubject: {mail['subject']}\n\n{mail['body']}"
                (injected if i + 1 in case["attack_email_indices"] else benign).append(text)  # 1-based
        for case in json.loads(zf.read("inspect_evals/ipi_coding_agent/dataset/samples.json")):
            text = "\n\n".join([case["issue_text"], *case["repo_files"].values()])
            (benign if case["is_benign"] or case["injection_vector"] == "none" else injected).append(text)
    return list(dict.fromkeys(benign)), list(dict.fromkeys(injected))


def _inject(document: str, injection: str) -> str:
    paragraphs = document.split("\n\n")
    middle = len(paragraphs) // 2
    return "\n\n".join(paragraphs[:middle] + [injection] + paragraphs[middle:])


def tool_results() -> dict[str, tuple[list[str], bool]]:
    """name -> (texts, injected?)."""
    goals = data_lines("attack_goals.txt")
    indirect = [ln.split("\t", 1)[1] for ln in data_lines("attack_templates.txt") if ln.startswith("indirect\t")]
    docs, rows = documents(), ledger_rows()
    bench_benign, bench_injected = _benchmarks()
    injections = [t.replace("{goal}", goals[i % len(goals)]) for i, t in enumerate(indirect)]
    return {
        "documents (policy, agreements, invoice)": (docs, False),
        "ledger rows (JSON)": (rows, False),
        "benchmark e-mails / issues, benign": (bench_benign, False),
        "documents + pasted injection": ([_inject(d, inj) for d in docs for inj in injections], True),
        "ledger rows + injection in a text field": ([r[:-1] + f', "note": "{inj}"}}' for r, inj in zip(rows, injections * 20)], True),
        "benchmark e-mails / issues, injected": (bench_injected, True),
    }
