"""The one retry-delay formula every retry loop in trunner uses."""

from __future__ import annotations

import random

_MAX_DOUBLINGS = 32


def exponential_backoff(retry: int, *, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Seconds to wait before retry ``retry`` (0-based): ``base`` doubling per retry up to ``cap``,
    jittered to 50-100 % so that many clients failing together do not retry together."""
    ceiling = min(cap, base * 2.0 ** min(retry, _MAX_DOUBLINGS))
    return (rng or random).uniform(ceiling / 2, ceiling)
