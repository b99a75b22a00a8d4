"""The routing decision for one complete series: which pipelines run, where it is forwarded, and why.

A pipeline runs on a series when a matching rule names it (or "*") AND the pipeline's own Selector accepts the
series: the rule says what the site wants, the selector what the pipeline can handle. Rules of level "study"
are evaluated (per series) only when the whole study is complete: the caller passes ``level="study"``.
Pipelines whose selector triggers per study run only at study level; at study level any pipeline named by a
matching study rule can run (a series-trigger pipeline then waits for the whole study).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from dicomnode.plugins.api import Pipeline, Trigger
from dicomnode.routing.facts import SeriesFacts
from dicomnode.routing.rules import ALL_PIPELINES, Rule, match_rule
from dicomnode.routing.selectors import MatchResult, match_selector

__all__ = ["PipelineExplanation", "RouteDecision", "RuleExplanation", "check_pipelines", "decide"]

logger = logging.getLogger(__name__)

Level = Literal["series", "study"]


@dataclass(frozen=True)
class PipelineExplanation:
    """Whether one pipeline runs (for a rule) or accepts the series (its selector alone), and why."""

    pipeline: str
    runs: bool
    reasons: list[str]
    failures: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RuleExplanation:
    """One rule's verdict on the series: its criteria and, when it matched, each pipeline it names."""

    rule: str
    level: str
    matched: bool
    reasons: list[str]
    failures: list[str] = field(default_factory=list)
    pipelines: list[PipelineExplanation] = field(default_factory=list)
    forward_to: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RouteDecision:
    """What to do with a series: pipelines to run (deduplicated, in rule order), forward targets, and why.

    ``explanations`` covers the rules of the decided level; ``selectors`` says for every known pipeline
    whether its own selector accepts the series.
    """

    pipelines: list[str]
    forward_to: list[str]
    explanations: list[RuleExplanation]
    selectors: list[PipelineExplanation] = field(default_factory=list)


def _selector_verdict(name: str, pipeline: Pipeline, facts: SeriesFacts, level: Level) -> PipelineExplanation:
    result: MatchResult = match_selector(pipeline.selector, facts)
    reasons, failures = list(result.reasons), list(result.failures)
    if pipeline.selector.trigger is Trigger.STUDY and level == "series":
        note = "selector trigger is study: runs only when the whole study is complete"
        reasons.append(note)
        failures.append(note)
    return PipelineExplanation(pipeline=name, runs=not failures, reasons=reasons, failures=failures)


def check_pipelines(
    facts: SeriesFacts, pipelines: Mapping[str, Pipeline], *, level: Level = "series"
) -> list[PipelineExplanation]:
    """Every pipeline's own verdict on the series, independent of rules."""
    return [_selector_verdict(name, p, facts, level) for name, p in pipelines.items()]


def _named_pipelines(rule: Rule, pipelines: Mapping[str, Pipeline]) -> list[str]:
    names: list[str] = []
    for name in rule.pipelines:
        expanded = list(pipelines) if name == ALL_PIPELINES else [name]
        names.extend(n for n in expanded if n not in names)
    return names


def _explain_rule(
    rule: Rule, facts: SeriesFacts, verdicts: Mapping[str, PipelineExplanation], pipelines: Mapping[str, Pipeline]
) -> RuleExplanation:
    result = match_rule(rule, facts)
    per_pipeline: list[PipelineExplanation] = []
    if result.matched:
        for name in _named_pipelines(rule, pipelines):
            verdict = verdicts.get(name)
            if verdict is None:
                reason = f"pipeline {name!r} is not enabled or unknown"
                per_pipeline.append(PipelineExplanation(name, False, [reason], [reason]))
            else:
                per_pipeline.append(verdict)
    return RuleExplanation(
        rule=rule.name,
        level=rule.level,
        matched=result.matched,
        reasons=result.reasons,
        failures=result.failures,
        pipelines=per_pipeline,
        forward_to=list(rule.forward_to) if result.matched else [],
    )


def decide(
    facts: SeriesFacts,
    rules: Sequence[Rule],
    pipelines: Mapping[str, Pipeline],
    *,
    level: Level = "series",
) -> RouteDecision:
    """The pure routing decision for one complete series at ``level`` (no I/O, no database)."""
    verdicts = {v.pipeline: v for v in check_pipelines(facts, pipelines, level=level)}
    explanations = [_explain_rule(r, facts, verdicts, pipelines) for r in rules if r.level == level]
    run: list[str] = []
    forward: list[str] = []
    for explanation in explanations:
        run.extend(p.pipeline for p in explanation.pipelines if p.runs and p.pipeline not in run)
        forward.extend(t for t in explanation.forward_to if t not in forward)
    unknown = {p.pipeline for e in explanations for p in e.pipelines if p.pipeline not in pipelines}
    if unknown:
        logger.warning(
            "rules name pipelines that are not enabled: %s",
            sorted(unknown),
            extra={"action": "routing.unknown_pipeline", "series_instance_uid": facts.series_instance_uid},
        )
    return RouteDecision(
        pipelines=run, forward_to=forward, explanations=explanations, selectors=list(verdicts.values())
    )
