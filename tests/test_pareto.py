"""robustcheck.pareto against a hand-worked set and an independent brute force.

The conventions of ``pareto_front``: AUC higher is better, resilience lower is better and used
as given (a negative value is better than zero); a point is dominated by another that is at
least as good in both figures and not identical to it in both; identical points (ties in both
figures) stay on the front together; ``dominated_by`` names the dominating points in input
order; the output keeps the input order.
"""

from __future__ import annotations

import numpy as np
import pytest

from robustcheck.pareto import ParetoPoint, pareto_front

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


def brute_force_dominators(points: list[tuple[str, float, float]]) -> dict[str, list[str]]:
    """For every point, the names of the points that beat it, in input order: no worse in AUC
    (higher is better), no worse in resilience (lower is better), and not the same pair."""
    out: dict[str, list[str]] = {}
    for name_q, auc_q, res_q in points:
        beaten_by = []
        for name_p, auc_p, res_p in points:
            if name_p == name_q:
                continue
            no_worse = auc_p >= auc_q and res_p <= res_q
            same_pair = auc_p == auc_q and res_p == res_q
            if no_worse and not same_pair:
                beaten_by.append(name_p)
        out[name_q] = beaten_by
    return out


def sweep_front(points: list[tuple[str, float, float]]) -> set[str]:
    """The front by a sweep over AUC levels, best first: a point is on it when its resilience
    is the lowest at its own AUC and strictly below every resilience at a higher AUC."""
    front: set[str] = set()
    best_above = float("inf")  # lowest resilience among strictly higher AUCs
    for level in sorted({auc for _, auc, _ in points}, reverse=True):
        at_level = [(name, res) for name, auc, res in points if auc == level]
        lowest = min(res for _, res in at_level)
        if lowest < best_above:
            front |= {name for name, res in at_level if res == lowest}
        best_above = min(best_above, lowest)
    return front


def random_points(seed: int, n: int) -> list[tuple[str, float, float]]:
    """Coarse figures, so that ties in one figure and identical points are common; the
    resilience goes below zero, where it is used as given."""
    rng = np.random.default_rng(seed)
    auc = np.round(rng.uniform(0.7, 0.9, n), 2)
    res = np.round(rng.uniform(-1.0, 3.0, n), 0)
    return [(f"t{i}", float(a), float(r)) for i, (a, r) in enumerate(zip(auc, res, strict=True))]


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
    # the hand-worked set agrees with both independent computations
    assert {p.name: p.dominated_by for p in res.values()} == brute_force_dominators(POINTS)
    assert front == sweep_front(POINTS)


@pytest.mark.parametrize("seed", range(6))
def test_matches_brute_force_on_random_points(seed: int) -> None:
    pts = random_points(seed, 40)
    pairs = {(auc, res) for _, auc, res in pts}
    assert len(pairs) < len(pts)  # identical points are part of the test
    assert len({auc for _, auc, _ in pts}) < len(pts) and len({r for *_, r in pts}) < len(pts)
    out = pareto_front(pts)
    assert [(p.name, p.auc, p.resilience) for p in out] == pts  # input order, figures as given
    expected = brute_force_dominators(pts)
    assert {p.name: p.dominated_by for p in out} == expected
    front = {p.name for p in out if p.on_front}
    assert front == {name for name, by in expected.items() if not by} == sweep_front(pts)
    assert front and len(front) < len(pts)
    # every identical pair shares its verdict and its dominators
    for p in out:
        for q in out:
            if (p.auc, p.resilience) == (q.auc, q.resilience):
                assert (p.on_front, p.dominated_by) == (q.on_front, q.dominated_by)


def test_order_of_the_input_changes_only_the_order_of_the_output() -> None:
    pts = random_points(11, 30)
    shuffled = [pts[i] for i in np.random.default_rng(12).permutation(len(pts))]
    first = {p.name: p for p in pareto_front(pts)}
    second = pareto_front(shuffled)
    assert [p.name for p in second] == [name for name, *_ in shuffled]
    position = {name: i for i, (name, *_) in enumerate(shuffled)}
    for p in second:
        assert p.on_front == first[p.name].on_front
        assert p.dominated_by == sorted(first[p.name].dominated_by, key=position.__getitem__)


def test_resilience_is_used_as_given() -> None:
    # -2% beats +1% at the same AUC: no absolute value is taken
    out = {p.name: p for p in pareto_front([("down", 0.8, -2.0), ("up", 0.8, 1.0)])}
    assert out["down"].on_front and out["up"].dominated_by == ["down"]


def test_edge_cases() -> None:
    assert pareto_front([]) == []
    assert pareto_front([("only", 0.5, 10.0)])[0].on_front
    twins = pareto_front([("a", 0.9, 1.0), ("b", 0.9, 1.0)])
    assert [(p.on_front, p.dominated_by) for p in twins] == [(True, []), (True, [])]
    with pytest.raises(ValueError, match="duplicate names in Pareto points: a$"):
        pareto_front([("a", 0.9, 1.0), ("a", 0.8, 2.0)])
    with pytest.raises(ValueError, match="point 'a' has a non-finite figure"):
        pareto_front([("a", float("nan"), 1.0)])
    with pytest.raises(ValueError, match="point 'b' has a non-finite figure"):
        pareto_front([("a", 0.9, 1.0), ("b", 0.8, float("inf"))])
