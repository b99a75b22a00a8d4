"""Retry policy: backoff with full jitter, C-STORE status classification, destination parsing."""

from __future__ import annotations

import random

import pytest

from dicomnode.addresses import Destination
from dicomnode.dispatch import Outcome, backoff_delay, classify_status
from dicomnode.errors import ValidationError


def test_backoff_bound_grows_exponentially_until_the_cap() -> None:
    # With full jitter the largest of many draws approaches the bound: base * 2**attempt, capped.
    rng = random.Random(1)
    for attempt, bound in [(0, 2.0), (1, 4.0), (2, 8.0), (3, 16.0), (5, 64.0), (8, 300.0), (50, 300.0)]:
        draws = [backoff_delay(attempt, rng=rng) for _ in range(2000)]
        assert all(0.0 <= d <= bound for d in draws)
        assert max(draws) > 0.95 * bound
        assert min(draws) < 0.05 * bound


def test_backoff_respects_custom_base_and_cap_and_huge_attempts() -> None:
    rng = random.Random(2)
    assert all(0 <= backoff_delay(4, base=0.5, cap=3.0, rng=rng) <= 3.0 for _ in range(500))
    assert 0 <= backoff_delay(10_000, rng=rng) <= 300.0


def test_backoff_is_reproducible_with_a_seeded_rng() -> None:
    assert backoff_delay(3, rng=random.Random(5)) == backoff_delay(3, rng=random.Random(5))


@pytest.mark.parametrize("kwargs", [{"attempt": -1}, {"attempt": 1, "base": 0}, {"attempt": 1, "cap": -1}])
def test_backoff_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValidationError):
        backoff_delay(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (0x0000, Outcome.ACCEPTED),
        (0x0001, Outcome.ACCEPTED),
        (0xB000, Outcome.ACCEPTED),
        (0xB006, Outcome.ACCEPTED),
        (0xB007, Outcome.ACCEPTED),
        (0xA700, Outcome.RETRYABLE),
        (0xA7FF, Outcome.RETRYABLE),
        (0x0110, Outcome.RETRYABLE),
        (0x0213, Outcome.RETRYABLE),
        (0xA900, Outcome.PERMANENT),
        (0xC000, Outcome.PERMANENT),
        (0xC211, Outcome.PERMANENT),
        (0x0122, Outcome.PERMANENT),
        (0x0124, Outcome.PERMANENT),
        (0x0117, Outcome.PERMANENT),
        (0x1234, Outcome.PERMANENT),
    ],
)
def test_classify_status(status: int, outcome: Outcome) -> None:
    assert classify_status(status) is outcome


def test_destination_parse() -> None:
    assert Destination.parse("PACS@10.0.0.5:104") == Destination("PACS", "PACS", "10.0.0.5", 104)
    assert Destination.parse(" PACS@pacs.example.org:11112 ", name="main").name == "main"
    v6 = Destination.parse("PACS@[::1]:104")
    assert v6.host == "::1" and str(v6) == "PACS@[::1]:104"


@pytest.mark.parametrize(
    "text", ["PACS", "PACS@host", "@host:104", "PACS@:104", "PACS@host:0", "PACS@host:70000", "A" * 17 + "@h:104"]
)
def test_destination_parse_rejects_malformed(text: str) -> None:
    with pytest.raises(ValidationError):
        Destination.parse(text)
