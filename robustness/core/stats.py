"""Statistics for reports, gates and verdicts, from :mod:`scipy.stats`.

Robust accuracies often sit at 0 or n successes and samples are small, so intervals
are Wilson score intervals and paired comparisons use exact binomial tests.
"""

from __future__ import annotations

from scipy import stats


def wilson_interval(successes: int, n: int, *, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion ``successes / n``.

    Unlike the normal approximation it stays inside [0, 1] and is sensible at 0 and n
    successes. Returns ``(0.0, 1.0)`` when ``n == 0`` (nothing is known).
    """
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, n={n}]; got {successes}")
    ci = stats.binomtest(successes, n).proportion_ci(confidence_level=confidence,
                                                      method="wilson")
    # scipy leaves round-off at the ends (1 - 1e-16); the exact ends are known.
    low = 0.0 if successes == 0 else float(ci.low)
    high = 1.0 if successes == n else float(ci.high)
    return low, high


def sign_test(wins: int, losses: int, *, alternative: str = "two-sided") -> float:
    """Exact sign test p-value for ``wins`` vs ``losses`` discordant pairs.

    This is the exact McNemar test: ties (pairs where both sides agree) carry no
    information and are left out by the caller. ``alternative="greater"`` tests whether
    wins are more likely than losses (one-sided). Returns 1.0 when there are no pairs.
    """
    if wins < 0 or losses < 0:
        raise ValueError(f"wins and losses must be >= 0; got {wins}, {losses}")
    n = wins + losses
    if n == 0:
        return 1.0
    return float(stats.binomtest(wins, n, 0.5, alternative=alternative).pvalue)
