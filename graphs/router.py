"""Router workflows (`kind: router`): send a free-form request to one of several workflows.

    name: router
    kind: router
    router:
      examples: routing/examples.yaml      # {label: [example request, …]}, beside inline ones
      threshold: 0.5                       # below it: the fallback
      fallback: needs_review               # or a workflow
      routes:
        document_triage: {to: document_triage}
        research:        {to: research}
        out_of_scope:    {to: fallback}    # a label for what no workflow handles

The decision is made by the router agent (flotilla.agents.router: TF-IDF + logistic
regression, no model call). `check_router` reports every problem with its file and line;
`Router.decide` turns a request into a `RouteDecision`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from flotilla.audit.errors import ConfigError
from flotilla.graphs.spec import NEEDS_REVIEW, ROUTE_TO_FALLBACK, SpecError, SpecProblem, WorkflowSpec

__all__ = ["Router", "RouteDecision", "Evaluation", "evaluate", "check_router", "load_examples", "resolve_target", "CLASSIFIER_NAME"]

CLASSIFIER_NAME = "tfidf-logreg"
"""What the step record and span name as the router's "model"."""


@dataclass(frozen=True, slots=True)
class RouteDecision:
    label: str
    """The best-scoring label."""
    confidence: float
    scores: dict[str, float]
    """Every label's probability, best first."""
    target: str
    """The workflow the request goes to, or `needs_review`."""
    fallback: bool
    """True when the request went to the fallback (under the threshold, or an out-of-scope label)."""
    reason: str
    latency_ms: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "confidence": round(self.confidence, 4),
            "target": self.target,
            "fallback": self.fallback,
            "reason": self.reason,
            "scores": {k: round(v, 4) for k, v in self.scores.items()},
        }

    def step_record(self, router: str) -> dict[str, Any]:
        """The run's first step record: which route, how sure, and why."""
        return {
            "agent": "route",
            "node_kind": "route",
            "produced_by": CLASSIFIER_NAME,
            "model": f"{router}:{CLASSIFIER_NAME}",
            "alias": None,
            "fallback": False,
            "ok": True,
            "latency_ms": round(self.latency_ms, 3),
            "input_tokens": 0,
            "output_tokens": 0,
            "output": self.to_dict(),
            "notes": [self.reason],
        }


def _problem(spec: WorkflowSpec, message: str, *loc: Any) -> SpecProblem:
    return SpecProblem(file=str(spec.source) if spec.source else "<workflow>", line=spec.line_of(*loc), message=message)


def load_examples(spec: WorkflowSpec) -> dict[str, list[str]]:
    """Every label's examples: the `examples:` file's, then each route's inline ones.
    A problem in the file raises SpecError naming the file and line."""
    assert spec.router is not None
    found: dict[str, list[str]] = {label: [] for label in spec.router.routes}
    if spec.router.examples:
        path = spec.base_dir / spec.router.examples
        if not path.is_file():
            raise SpecError([_problem(spec, f"router.examples: file {spec.router.examples!r} not found (paths are relative to {spec.base_dir})", "router", "examples")])
        for label, examples in _read_examples_file(path, set(spec.router.routes)).items():
            found[label].extend(examples)
    for label, route in spec.router.routes.items():
        found[label].extend(route.examples)
    return found


def _read_examples_file(path: Path, labels: set[str]) -> dict[str, list[str]]:
    try:
        text = path.read_text(encoding="utf-8")
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except UnicodeDecodeError:
        raise SpecError([SpecProblem(file=str(path), line=None, message="not UTF-8 text")]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise SpecError([SpecProblem(file=str(path), line=mark.line + 1 if mark else None, message=f"malformed YAML: {getattr(exc, 'problem', None) or exc}")]) from None
    if not isinstance(root, yaml.MappingNode):
        raise SpecError([SpecProblem(file=str(path), line=1, message="an examples file maps each route label to a list of example requests")])
    out: dict[str, list[str]] = {}
    problems = []
    for key, value in root.value:
        line = key.start_mark.line + 1
        if key.value not in labels:
            problems.append(SpecProblem(file=str(path), line=line, message=f"examples for unknown label {key.value!r}; routes: {', '.join(sorted(labels))}"))
            continue
        items = value.value if isinstance(value, yaml.SequenceNode) else None
        if items is None or not all(isinstance(i, yaml.ScalarNode) and i.value.strip() for i in items):
            problems.append(SpecProblem(file=str(path), line=line, message=f"{key.value}: give a list of non-empty example requests (strings)"))
            continue
        out[key.value] = [i.value for i in items]
    if problems:
        raise SpecError(problems)
    return out


def resolve_target(spec: WorkflowSpec, target: str) -> WorkflowSpec:
    """The workflow a route (or the fallback) names: a built-in name or a path beside the router."""
    from flotilla.graphs.catalog import load_workflow

    local = spec.base_dir / target
    return load_workflow(local if target.endswith((".yaml", ".yml")) and local.is_file() else target)


def check_router(spec: WorkflowSpec) -> list[SpecProblem]:
    """Every problem of a router: examples, labels without examples, targets that do not load."""
    assert spec.router is not None
    problems: list[SpecProblem] = []
    try:
        examples = load_examples(spec)
    except SpecError as exc:
        problems.extend(exc.problems)
        examples = None
    routes = spec.router.routes
    if len(routes) < 2:
        problems.append(_problem(spec, "a router needs at least two routes to choose between", "router", "routes"))
    for label, route in routes.items():
        if examples is not None and not examples[label]:
            where = f" or under {label!r} in {spec.router.examples}" if spec.router.examples else ""
            problems.append(_problem(spec, f"route {label!r} has no examples; add some under its `examples:`{where}", "router", "routes", label))
        if route.to != ROUTE_TO_FALLBACK:
            problems.extend(_check_target(spec, route.to, "router", "routes", label, "to"))
    if spec.router.fallback != NEEDS_REVIEW:
        problems.extend(_check_target(spec, spec.router.fallback, "router", "fallback"))
    return problems


def _check_target(spec: WorkflowSpec, target: str, *loc: Any) -> list[SpecProblem]:
    try:
        found = resolve_target(spec, target)
    except SpecError as exc:
        return [_problem(spec, f"{loc[-1]}: workflow {target!r} is invalid: {exc.problems[0]}", *loc)]
    except ConfigError as exc:
        return [_problem(spec, f"{loc[-1]}: {exc.message}", *loc)]
    if found.kind == "router":
        return [_problem(spec, f"{loc[-1]}: {target!r} is itself a router; route to the workflows it routes to", *loc)]
    return []


@dataclass
class Router:
    """A router workflow ready to decide: its spec and its trained classifier."""

    spec: WorkflowSpec
    cache_dir: Path | None = None
    _classifier: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.spec.kind != "router" or self.spec.router is None:
            raise ConfigError(f"workflow {self.spec.name!r} is not a router (`kind: router`)")

    @property
    def classifier(self):
        if self._classifier is None:
            from flotilla.agents.router import IntentClassifier

            problems = check_router_examples(self.spec)
            if problems:
                raise SpecError(problems)
            assert self.spec.router is not None
            self._classifier = IntentClassifier.cached(load_examples(self.spec), self.cache_dir, max_chars=self.spec.router.max_chars)
        return self._classifier

    def decide(self, text: str) -> RouteDecision:
        """Where `text` goes. An empty request is InvalidInput."""
        settings = self.spec.router
        assert settings is not None
        classifier = self.classifier
        started = time.perf_counter()
        scores = classifier.scores(text)
        latency_ms = (time.perf_counter() - started) * 1000
        label, confidence = next(iter(scores.items()))
        summary = ", ".join(f"{k} {v:.2f}" for k, v in scores.items())
        to = settings.routes[label].to
        if confidence < settings.threshold:
            target, fallback = settings.fallback, True
            reason = f"no route reached the confidence threshold {settings.threshold:.2f} (scores: {summary}); sent to the fallback {target!r}"
        elif to == ROUTE_TO_FALLBACK:
            target, fallback = settings.fallback, True
            reason = f"the request looks out of scope ({label} {confidence:.2f}; scores: {summary}); sent to the fallback {target!r}"
        else:
            target, fallback = to, False
            reason = f"routed to {to!r} as {label} with confidence {confidence:.2f} (scores: {summary})"
        return RouteDecision(label, confidence, scores, target, fallback, reason, latency_ms)


@dataclass(frozen=True, slots=True)
class Evaluation:
    """How a router does on labelled requests it was not trained on."""

    total: int
    correct: int
    fallback: int
    """Requests sent to the fallback (rightly, for out-of-scope labels, or under the threshold)."""
    misses: list[tuple[str, str, str]]
    """(expected label, where it went, the request's opening) for each wrong decision."""
    latencies_ms: list[float]

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0


def evaluate(router: Router, labelled: dict[str, list[str]]) -> Evaluation:
    """Decide every request of `{label: [request, …]}`; right means it reached its label's target
    (for a label routed `to: fallback`, the fallback)."""
    settings = router.spec.router
    assert settings is not None
    correct = fallback = 0
    misses, latencies = [], []
    for label, requests in labelled.items():
        to = settings.routes[label].to
        expected = settings.fallback if to == ROUTE_TO_FALLBACK else to
        for text in requests:
            decision = router.decide(text)
            latencies.append(decision.latency_ms)
            fallback += decision.fallback
            if decision.target == expected:
                correct += 1
            else:
                misses.append((label, decision.target, " ".join(text.split())[:70]))
    return Evaluation(sum(map(len, labelled.values())), correct, fallback, misses, latencies)


def check_router_examples(spec: WorkflowSpec) -> list[SpecProblem]:
    """Only the problems that stop training (run time checks these; `validate` checks all)."""
    try:
        examples = load_examples(spec)
    except SpecError as exc:
        return exc.problems
    assert spec.router is not None
    return [
        _problem(spec, f"route {label!r} has no examples", "router", "routes", label)
        for label in spec.router.routes
        if not examples[label]
    ] + ([_problem(spec, "a router needs at least two routes to choose between", "router", "routes")] if len(examples) < 2 else [])
