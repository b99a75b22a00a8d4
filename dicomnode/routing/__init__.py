"""Routing: which pipelines run on a complete series and where it is forwarded (rules are data)."""

from dicomnode.routing.bodypart import BODY_PARTS, BodyPart, normalise_body_part, normalise_body_part_text
from dicomnode.routing.facts import SeriesFacts
from dicomnode.routing.router import PipelineExplanation, RouteDecision, RuleExplanation, decide
from dicomnode.routing.rules import Rule, RuleMatch, load_rules, match_rule
from dicomnode.routing.selectors import MatchResult, match_selector

__all__ = [
    "BODY_PARTS",
    "BodyPart",
    "MatchResult",
    "PipelineExplanation",
    "RouteDecision",
    "Rule",
    "RuleExplanation",
    "RuleMatch",
    "SeriesFacts",
    "decide",
    "load_rules",
    "match_rule",
    "match_selector",
    "normalise_body_part",
    "normalise_body_part_text",
]
