"""Injection screening with the YARA rules NeMo Guardrails ships (code, sqli, xss, template).

The rules are read from the installed `nemoguardrails` package (found with `find_spec`, so
nemoguardrails itself is not imported: it is heavy) and compiled once with yara-python —
the same thing NeMo's `injection_detection` action does, minus a recompile per call.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from pathlib import Path

from flotilla.audit.errors import ConfigError
from flotilla.guardrails._timing import Stopwatch
from flotilla.guardrails.base import RailPoint, Verdict
from flotilla.guardrails.extras import require

require("yara")  # the [rails] extra's import site: an install hint instead of an ImportError
import yara  # noqa: E402

__all__ = ["YaraRail", "nemo_yara_dir", "NEMO_YARA_RULESETS"]

NEMO_YARA_RULESETS: tuple[str, ...] = ("code", "sqli", "template", "xss")


def nemo_yara_dir() -> Path:
    spec = importlib.util.find_spec("nemoguardrails")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("nemoguardrails is not installed; `pip install nemoguardrails==0.24.1` for its YARA rules")
    path = Path(next(iter(spec.submodule_search_locations))) / "library" / "injection_detection" / "yara_rules"
    if not path.is_dir():
        raise ConfigError(f"nemoguardrails has no YARA rules at {path}; is it version 0.24?")
    return path


class YaraRail:
    """Blocks text that matches any compiled rule. Rule = `<ruleset>:<rule name>`."""

    name = "yara"

    def __init__(
        self,
        *,
        rulesets: Sequence[str] = NEMO_YARA_RULESETS,
        rules_dir: Path | None = None,
        points: Sequence[RailPoint] = tuple(RailPoint),
        point_rulesets: Mapping[RailPoint, Sequence[str]] | None = None,
    ) -> None:
        self.directory = rules_dir or nemo_yara_dir()
        self.rulesets = tuple(rulesets)
        self.points = frozenset(points)
        self._compiled: dict[tuple[str, ...], yara.Rules] = {}
        self._rules = self._compile(self.rulesets)
        # Some rules are too eager for some points (NeMo's sqli rule fires on "supplier's address;"
        # in prose), so a point may use its own subset.
        self._by_point = {RailPoint(p): self._compile(tuple(r)) for p, r in (point_rulesets or {}).items()}

    def _compile(self, rulesets: tuple[str, ...]) -> yara.Rules:
        if rulesets not in self._compiled:
            missing = [r for r in rulesets if not (self.directory / f"{r}.yara").is_file()]
            if missing:
                raise ConfigError(f"unknown YARA ruleset(s) {missing}; available in {self.directory}: "
                                  f"{sorted(p.stem for p in self.directory.glob('*.yara'))}")
            self._compiled[rulesets] = yara.compile(filepaths={r: str(self.directory / f"{r}.yara") for r in rulesets})
        return self._compiled[rulesets]

    def matches(self, text: str, point: RailPoint | None = None) -> list[str]:
        rules = self._by_point.get(point, self._rules) if point is not None else self._rules
        return [f"{m.namespace}:{m.rule}" for m in rules.match(data=text.encode("utf-8", "replace"))]

    def check_sync(self, text: str, *, point: RailPoint) -> Verdict:
        watch = Stopwatch()
        hits = self.matches(text, point)
        return Verdict(
            engine=self.name,
            rule=",".join(hits) if hits else "none",
            allowed=not hits,
            latency_ms=watch.ms,
            score=1.0 if hits else 0.0,
            detail=f"matched YARA rule(s) {', '.join(hits)}" if hits else "",
            attributes={"matches": hits},
        )

    async def check(self, text: str, *, point: RailPoint) -> Verdict:
        return self.check_sync(text, point=point)  # microseconds: no thread hop
