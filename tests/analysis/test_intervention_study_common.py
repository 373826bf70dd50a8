"""The intervention study's shared statistics against independent references: the Wilson interval against scipy, its
defining equation and Newcombe's published table; the binomial summaries; rank agreement summarising exactly the
rhos it stores; and pruning orders over layers of different widths."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from explorer.analysis.intervention import accuracy
from explorer.analysis.intervention_study.common import (
    binomial_summary, proportion, pruning_study, rank_agreement, stored, wilson,
)
from tests.analysis.test_intervention import Widths, run

SCIPY = 1e-12  # z from statistics.NormalDist vs scipy's ndtri differ by about one ulp; the formula is the same


@pytest.mark.parametrize("level", [0.8, 0.95, 0.99])
def test_wilson_equals_scipy_binomtest(level):
    for n in (1, 2, 7, 50, 263, 1000, 5120):
        for k in sorted({0, 1, n // 3, n // 2, n - 1, n}):
            ci = stats.binomtest(k, n).proportion_ci(confidence_level=level, method="wilson")
            assert wilson(k, n, level) == pytest.approx([ci.low, ci.high], rel=0, abs=SCIPY), (k, n)


def test_wilson_solves_its_defining_equation():
    """The bounds are the p with (k/n - p)^2 = z^2 p (1 - p) / n (the score test at the boundary); 0 and 1 at the
    ends exactly."""
    z = stats.norm.ppf(0.975)
    for k, n in ((1, 3), (5, 9), (81, 263), (999, 1000)):
        for p in wilson(k, n):
            assert (k / n - p) ** 2 == pytest.approx(z * z * p * (1 - p) / n, rel=1e-9, abs=1e-15)
    assert wilson(0, 40)[0] == 0.0 and wilson(40, 40)[1] == 1.0


def test_wilson_matches_newcombes_table():
    """Newcombe 1998 (Stat. Med. 17:857), Table I, method 3 (score, no continuity correction), 4 decimals."""
    published = {(81, 263): (0.2553, 0.3662), (15, 148): (0.0624, 0.1605), (0, 20): (0.0, 0.1611),
                 (1, 29): (0.0061, 0.1718), (29, 29): (0.8830, 1.0)}
    for (k, n), interval in published.items():
        assert wilson(k, n) == pytest.approx(interval, abs=5e-5), (k, n)  # 4 decimals published


def test_binomial_summaries_and_bad_input():
    flags = torch.tensor([True, False, True, True])
    assert proportion(flags) == {"k": 3, "n": 4, "rate": 0.75, "ci95": wilson(3, 4)}
    summary = binomial_summary(flags.long())
    assert summary == {"accuracy": 0.75, "correct": 3, "n": 4, "ci95": wilson(3, 4), "chance_in_ci": True}
    assert not binomial_summary(torch.ones(400))["chance_in_ci"]
    with pytest.raises(ValueError, match="k"):
        wilson(5, 3)
    with pytest.raises(ValueError, match="n"):
        wilson(0, 0)
    with pytest.raises(ValueError, match="level"):
        wilson(1, 2, 1.0)
    with pytest.raises(TypeError, match="flags"):
        proportion(torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="hits"):
        binomial_summary(torch.zeros(0))


def test_rank_agreement_summarises_the_rhos_it_stores():
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(30, 2, 5, generator=generator, dtype=torch.float64)
    b = a + torch.randn(30, 2, 5, generator=generator, dtype=torch.float64)
    b[3] = 1.0  # a constant input: rho undefined
    out = rank_agreement(a, b)
    defined = [stats.spearmanr(a[i].flatten(), b[i].flatten()).statistic for i in range(30) if i != 3]
    assert out["per_input"][3] is None and out["undefined"] == 1
    kept = [r for r in out["per_input"] if r is not None]
    assert kept == [float(f"{r:.6g}") for r in defined]  # 6 significant digits stored
    x = np.asarray(kept)
    low, high = stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=stats.sem(x))
    assert out["n"] == 29
    assert out["mean"] == pytest.approx(x.mean(), rel=0, abs=1e-15)  # the stored values' mean, not the unrounded
    assert out["ci95"] == pytest.approx([low, high], rel=0, abs=1e-12)


def test_stored_keeps_nan():
    values = torch.tensor([[1.23456789, math.nan], [-2e-7, 3.0]])
    assert torch.equal(stored(values).isnan(), values.isnan())
    assert stored(values)[0, 0] == 1.23457 and stored(values).dtype == torch.float64


def test_pruning_study_over_layers_of_different_widths():
    """NaN scores mark the channels a narrower layer lacks: they are in no order, random ones included."""
    torch.manual_seed(0)
    model = Widths().double()
    x = torch.randn(6, 4, 7, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    labels = model(x).argmax(-1)
    score = torch.tensor([[0.5, 0.1, 0.9, 0.3, 0.2, 0.8], [0.4, 0.7, 0.6, 0.0, math.nan, math.nan]],
                         dtype=torch.float64)
    study = pruning_study(model, run, x, accuracy(labels), "conv*.hook_out", {"score": score})
    assert study["steps"] == list(range(11))  # 6 + 4 channels
    flat = [layer * 6 + unit for layer, unit in study["orders"]["score"]]
    assert flat == np.argsort(score.flatten().numpy()[:10], kind="stable").tolist()
    for seed in range(3):
        present = torch.tensor([u for u in range(12) if u not in (10, 11)])
        expected = present[torch.randperm(10, generator=torch.Generator().manual_seed(seed))].tolist()
        assert [layer * 6 + unit for layer, unit in study["orders"][f"random_{seed}"]] == expected
    assert study["curves"]["score"][0] == 1.0


def test_laps_times_each_stage_from_the_previous_call(monkeypatch):
    from explorer.analysis.intervention_study import common

    ticks = iter([10.0, 12.5, 12.504, 20.0])  # made, "load", "attention", "pruning"
    monkeypatch.setattr(common.time, "perf_counter", lambda: next(ticks))
    said = []
    laps = common.Laps(said.append, "vit")
    for name in ("load", "attention", "pruning"):
        laps(name)
    assert laps.seconds == {"load": 2.5, "attention": 0.0, "pruning": 7.5}  # differences, rounded to 2 decimals
    assert said == ["vit: load 2.5 s", "vit: attention 0.0 s", "vit: pruning 7.5 s"]


def test_rounded_takes_numpy_scalars_and_keeps_integers():
    from explorer.analysis.intervention_study.common import rounded

    assert rounded(np.float32(0.1), 3) == 0.1 and isinstance(rounded(np.float32(0.1), 3), float)
    assert rounded(np.int64(7), 3) == 7 and isinstance(rounded(np.int64(7), 3), int)
    assert rounded({"a": [np.float64(2 / 3), (1, np.nan)]}, 4) == {"a": [0.6667, [1, None]]}
    assert rounded(np.array([1, 2]), 3) == [1, 2] and rounded(np.array(1.23456), 3) == 1.23
