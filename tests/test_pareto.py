"""robustcheck.pareto on a constructed set with ties and duplicate points."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from robustcheck.pareto import ParetoPoint, dominates, pareto_front

POINTS = [
    ("best_auc", 0.95, 4.0),
    ("most_resilient", 0.80, 0.5),
    ("balanced", 0.90, 1.0),
    ("balanced_twin", 0.90, 1.0),  # identical to balanced: both on the front
    ("same_auc_worse_res", 0.90, 2.0),  # tie in AUC, dominated by balanced and its twin
    ("same_res_worse_auc", 0.85, 1.0),  # tie in resilience, dominated likewise
    ("dominated_by_all", 0.70, 5.0),
    ("tie_best_auc", 0.95, 4.0),  # duplicate of best_auc
    ("edge", 0.95, 3.9),  # beats best_auc and its duplicate on resilience only
]


def test_front_and_dominators() -> None:
    res = {p.name: p for p in pareto_front(POINTS)}
    assert [p.name for p in pareto_front(POINTS)] == [p[0] for p in POINTS]  # input order
    front = {n for n, p in res.items() if p.on_front}
    assert front == {"most_resilient", "balanced", "balanced_twin", "edge"}
    assert res["balanced"].dominated_by == []
    assert res["same_auc_worse_res"].dominated_by == ["balanced", "balanced_twin"]
    assert res["same_res_worse_auc"].dominated_by == ["balanced", "balanced_twin"]
    assert res["best_auc"].dominated_by == ["edge"]
    assert res["tie_best_auc"].dominated_by == ["edge"]
    assert set(res["dominated_by_all"].dominated_by) == {n for n, *_ in POINTS} - {
        "dominated_by_all"
    }
    assert res["edge"] == ParetoPoint("edge", 0.95, 3.9, True, [])


def test_matches_brute_force_on_random_points() -> None:
    rng = np.random.default_rng(0)
    auc = np.round(rng.uniform(0.7, 0.9, 40), 2)  # coarse values: many ties and duplicates
    res = np.round(rng.uniform(0.0, 3.0, 40), 0)
    pts = [(f"t{i}", float(a), float(r)) for i, (a, r) in enumerate(zip(auc, res, strict=True))]
    out = pareto_front(pts)
    for p, q in itertools.product(pts, pts):
        assert dominates(p, q) == (p[0] in out[int(q[0][1:])].dominated_by)
    for point in out:
        assert point.on_front == (not point.dominated_by)
        # nothing on the front is dominated by anything; everything off it by a front point
        if not point.on_front:
            assert any(out[int(n[1:])].on_front for n in point.dominated_by)


def test_edge_cases() -> None:
    assert pareto_front([]) == []
    assert pareto_front([("only", 0.5, 10.0)])[0].on_front
    with pytest.raises(ValueError, match="duplicate names"):
        pareto_front([("a", 0.9, 1.0), ("a", 0.8, 2.0)])
    with pytest.raises(ValueError, match="non-finite"):
        pareto_front([("a", float("nan"), 1.0)])
