"""Statistics of the benchmark scripts over seeds: mean, sample standard deviation and the
paired difference of two arms with a two-sided t confidence interval (pure functions)."""

import math

from scipy import stats as scipy_stats

__all__ = ["mean_sd", "paired_differences", "t_interval"]


def _numbers(values, what):
    values = [float(v) for v in values]
    if not values:
        raise ValueError(f"{what}: no values")
    bad = [v for v in values if not math.isfinite(v)]
    if bad:
        raise ValueError(f"{what}: non-finite values {bad}")
    return values


def mean_sd(values, what="values"):
    """(mean, sample standard deviation with n - 1 in the denominator) of ``values``; the
    deviation is NaN for a single value."""
    values = _numbers(values, what)
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, math.nan
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def paired_differences(arm, reference, what="paired values"):
    """Per key (seed), ``arm[key] - reference[key]`` for the keys both dicts hold, sorted by key.

    Returns a list of (key, difference); ValueError naming ``what`` when no key is shared."""
    keys = sorted(set(arm) & set(reference))
    if not keys:
        raise ValueError(f"{what}: no seed in common ({sorted(arm)} vs {sorted(reference)})")
    return [(k, float(arm[k]) - float(reference[k])) for k in keys]


def t_interval(values, confidence=0.95, what="values"):
    """Two-sided ``confidence`` interval of the mean of ``values`` from Student's t with
    n - 1 degrees of freedom: mean -+ t_{(1+confidence)/2, n-1} * sd / sqrt(n).

    Returns (mean, low, high); low and high are NaN for a single value."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    mean, sd = mean_sd(values, what)
    n = len(values)
    if n < 2:
        return mean, math.nan, math.nan
    half = float(scipy_stats.t.ppf((1 + confidence) / 2, n - 1)) * sd / math.sqrt(n)
    return mean, mean - half, mean + half
