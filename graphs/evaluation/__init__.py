"""`flotilla eval`: A/B model configurations of a workflow on labelled cases.

Config overlays (overlay.py), the labelled cases and their checks (cases.py), per-field scorers
(scorers.py), the resumable case runner over the real workflow runner (engine.py), and the
report as a table, JSON (report.py) and self-contained HTML with charts (html.py).
"""

from flotilla.graphs.evaluation.cases import DatasetError, EvalCase, check_cases, read_cases
from flotilla.graphs.evaluation.engine import ResultsLog, run_config
from flotilla.graphs.evaluation.overlay import EvalConfig, check_config, load_overlay
from flotilla.graphs.evaluation.report import build_report, failed_gates, parse_gates, render_table
from flotilla.graphs.evaluation.scorers import ScorerSet, load_scorers

__all__ = [
    "DatasetError", "EvalCase", "EvalConfig", "ResultsLog", "ScorerSet",
    "build_report", "check_cases", "check_config", "failed_gates", "load_overlay", "load_scorers",
    "parse_gates", "read_cases", "render_table", "run_config",
]
