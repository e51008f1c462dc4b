"""Statistics used by the checks, each tested against scipy or an independent computation."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, NamedTuple

import numpy as np
from numpy.typing import ArrayLike


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) two-sided interval for a binomial proportion k/n."""
    from scipy.stats import beta

    if n <= 0:
        raise ValueError("clopper_pearson needs n > 0")
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    alpha = 1.0 - confidence
    low = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    high = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return low, high


def holm_adjust(pvalues: ArrayLike) -> np.ndarray:
    """Holm-Bonferroni step-down adjusted p-values of each family along the last axis.

    With the family's m p-values sorted ascending, p_(1) <= ... <= p_(m), the j-th adjusted
    value is ``max over i <= j of min(1, (m - i + 1) p_(i))`` (Holm, Scand. J. Statist. 6 (1979)
    65). Rejecting every hypothesis whose adjusted p-value is below alpha holds the family-wise
    error rate (the probability of any false rejection) at alpha under any dependence between
    the tests; whether any is rejected is Bonferroni's ``m * min p < alpha``, the step-down
    rejects more of the others. Leading axes are independent families (repetitions of a study),
    adjusted at once. NaN entries take no part (m counts the others) and stay NaN.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    if p.ndim == 0:
        raise ValueError("holm_adjust needs an array of p-values, got a scalar")
    if ((p < 0.0) | (p > 1.0)).any():
        raise ValueError("p-values must lie in [0, 1]")
    order = np.argsort(p, axis=-1, kind="stable")  # NaN last
    ranked = np.take_along_axis(p, order, axis=-1)
    m = (~np.isnan(p)).sum(axis=-1, keepdims=True)
    ranked *= m - np.arange(p.shape[-1])  # m - i + 1 for the 1-based rank i
    np.maximum.accumulate(ranked, axis=-1, out=ranked)
    np.minimum(ranked, 1.0, out=ranked)
    adjusted = np.empty_like(ranked)
    np.put_along_axis(adjusted, order, ranked, axis=-1)
    return adjusted


# --------------------------------------------------------------------------------------------
# Two-sample comparisons of feature distributions, every column at once.
#
# Inputs are 2-D arrays ``(events, features)``. Optional boolean masks of the same shape mark the
# entries that take part (False = padding, excluded from that column). The binned tests process
# columns in blocks that bound scratch memory; each block is read once into rows ``(features,
# events)`` (excluded entries become NaN, which NumPy sorts last) and sorted along the rows. The
# KS test sorts one column of each sample at a time. Blocks and columns run on a small thread
# pool, one per available core while their scratch fits in ``_SCRATCH_BYTES``. The only Python
# loops are over blocks or columns, over the rows of a block for cheap per-row steps, over
# histogram bins, over binary-search steps and over blocks of 65,536 values; never over events.
# --------------------------------------------------------------------------------------------

# Values (events x columns) per block of columns of the binned tests: bounds scratch memory
# (about 5 bytes per float32 value) while keeping blocks wide enough to read (events, features)
# arrays efficiently.
_BLOCK_VALUES = 1 << 24


class KSResult(NamedTuple):
    """Per-column two-sample Kolmogorov-Smirnov statistics and asymptotic p-values."""

    statistic: np.ndarray
    pvalue: np.ndarray


class Chi2Result(NamedTuple):
    """Per-column chi-squared homogeneity statistics, p-values and degrees of freedom."""

    statistic: np.ndarray
    pvalue: np.ndarray
    dof: np.ndarray


class CorrelationChange(NamedTuple):
    """How much the Pearson correlation matrix moves between a nominal and a perturbed sample."""

    max_abs: float
    argmax: tuple[int, int]
    relative_frobenius: float
    nominal: np.ndarray
    perturbed: np.ndarray


def _n_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _columns(
    x: ArrayLike, mask: ArrayLike | None, name: str
) -> tuple[np.ndarray, np.ndarray | None]:
    """Validate a sample (1-D is one column) and its optional mask."""
    arr = np.asarray(x)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (events, features), got shape {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold numbers, got dtype {arr.dtype}")
    if mask is None:
        return arr, None
    m = np.asarray(mask)
    if m.ndim == 1:
        m = m[:, None]
    if m.dtype != np.bool_:
        raise TypeError(f"mask for {name} must be boolean, got dtype {m.dtype}")
    if m.shape != arr.shape:
        raise ValueError(f"mask for {name} has shape {m.shape}, expected {arr.shape}")
    return arr, m


def _pair(
    a: ArrayLike, b: ArrayLike, mask_a: ArrayLike | None, mask_b: ArrayLike | None
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray | None]:
    a_, ma = _columns(a, mask_a, "a")
    b_, mb = _columns(b, mask_b, "b")
    if a_.shape[1] != b_.shape[1]:
        raise ValueError(f"a has {a_.shape[1]} features but b has {b_.shape[1]}")
    return a_, ma, b_, mb


def _work_dtype(*arrays: np.ndarray) -> type[np.floating]:
    """float32 when every input is float32 or narrower floats, float64 otherwise (ints exact)."""
    if all(x.dtype.kind == "f" and x.dtype.itemsize <= 4 for x in arrays):
        return np.float32
    return np.float64


def _rows(
    x: np.ndarray, mask: np.ndarray | None, cols: slice, dtype: type[np.floating]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Columns ``cols`` as float rows with excluded entries set to NaN.

    Returns the rows, the number of valid entries per row and whether a valid entry is NaN.
    """
    rows = _gather(x, cols, dtype)
    nan = np.isnan(rows)
    if mask is None:
        has_nan = nan.any(axis=1)
        n = np.full(rows.shape[0], rows.shape[1], dtype=np.int64)
    else:
        keep = _gather(mask, cols)
        has_nan = (nan & keep).any(axis=1)
        rows[~keep] = np.nan
        n = keep.sum(axis=1, dtype=np.int64)
    return rows, n, has_nan


def _sorted_rows(
    x: np.ndarray, mask: np.ndarray | None, cols: slice, dtype: type[np.floating]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """As :func:`_rows`, each row sorted (NaN, so excluded entries, last)."""
    rows, n, has_nan = _rows(x, mask, cols, dtype)
    rows.sort(axis=1)
    return rows, n, has_nan


# Sorted copies and other scratch that the threads of one test hold at once: threads are only
# added while their scratch fits, so a column of tens of millions of entries runs alone.
_SCRATCH_BYTES = 1 << 28


def _workers(tasks: int, task_bytes: int) -> int:
    """Threads for ``tasks`` independent tasks of ``task_bytes`` of scratch each."""
    return max(1, min(tasks, _n_threads(), _SCRATCH_BYTES // max(task_bytes, 1)))


def _by_blocks(
    fn: Callable[[slice], tuple[np.ndarray, ...]], n_cols: int, n_rows: int, value_bytes: int
) -> list[np.ndarray]:
    """Apply ``fn`` to blocks of columns (threads when there are several) and concatenate."""
    per = max(1, _BLOCK_VALUES // max(n_rows, 1))
    blocks = [slice(i, min(i + per, n_cols)) for i in range(0, n_cols, per)]
    if not blocks:
        return []
    parts = _map(fn, blocks, per * n_rows * value_bytes)
    return [np.concatenate(p) for p in zip(*parts, strict=True)]


def _map(fn: Callable[[Any], Any], tasks: Sequence[Any], task_bytes: int) -> list[Any]:
    """``fn`` of every task, on as many threads as :func:`_workers` allows."""
    workers = _workers(len(tasks), task_bytes)
    if workers == 1:
        return [fn(task) for task in tasks]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(fn, tasks))


_GATHER_ROWS = 4096  # events per chunk when turning columns into rows (fits the L2 cache)


def _gather(
    x: np.ndarray, cols: slice, dtype: type[np.generic] | None = None, out: np.ndarray | None = None
) -> np.ndarray:
    """Columns ``cols`` of an (events, features) array as C-ordered rows, cast to ``dtype``.

    Copied by chunks of events: a plain transposing copy of a tall array is several times slower.
    """
    if out is None:
        out = np.empty((cols.stop - cols.start, x.shape[0]), dtype=dtype or x.dtype)
    for start in range(0, x.shape[0], _GATHER_ROWS):
        stop = start + _GATHER_ROWS
        out[:, start:stop] = x[start:stop, cols].T
    return out


def _sorted_column(
    x: np.ndarray, mask: np.ndarray | None, j: int, dtype: type[np.floating]
) -> tuple[np.ndarray, bool]:
    """The valid entries of column ``j`` as a sorted copy in ``dtype``, and whether one is NaN."""
    col = np.array(x[:, j], dtype=dtype) if mask is None else x[mask[:, j], j].astype(dtype)
    col.sort()
    return col, bool(len(col)) and bool(np.isnan(col[-1]))  # NaN sorts last


_KS_KEYS = 1 << 16  # values at which both empirical CDFs are evaluated at a time


def _count_upto(
    sorted_: np.ndarray, keys: np.ndarray, side: Literal["left", "right"] = "right"
) -> np.ndarray:
    """``searchsorted(sorted_, keys, side)`` for sorted ``keys`` (values up to each key, or
    below it with ``side="left"``), searching only the stretch of ``sorted_`` that lies
    between the first and the last key."""
    lo = int(np.searchsorted(sorted_, keys[0], side="left"))
    hi = int(np.searchsorted(sorted_, keys[-1], side="right"))
    counts = np.searchsorted(sorted_[lo:hi], keys, side=side)
    counts += lo
    return counts


def _ks_distance(sa: np.ndarray, sb: np.ndarray) -> float:
    """KS distance of two sorted samples with scipy's float operations: both empirical CDFs
    (``counts / size``) at every value of either sample, block by block of values, so the
    scratch stays small whatever the sizes."""
    na, nb = len(sa), len(sb)
    high, low = -np.inf, np.inf
    for values in (sa, sb):
        for start in range(0, len(values), _KS_KEYS):
            keys = values[start : start + _KS_KEYS]
            diff = _count_upto(sa, keys) / na
            diff -= _count_upto(sb, keys) / nb
            high = max(high, float(diff.max()))
            low = min(low, float(diff.min()))
    return max(min(max(-low, 0.0), 1.0), high)


_FAST_TAIL_N = 100_000  # effective n from which the Smirnov tail uses Miller's approximation


def _ks_pvalue(d: np.ndarray, na: np.ndarray, nb: np.ndarray, fast_tail: bool) -> np.ndarray:
    """Two-sided asymptotic p-value as ``scipy.stats.ks_2samp(..., method="asymp")``.

    scipy takes ``en = m * n / (m + n)`` (m >= n the sample sizes), rounds it half-to-even and
    returns ``kstwo.sf(d, en)`` clipped to [0, 1]. For ``en * d**2 >= 2.2`` (p below about 0.025)
    and ``d < 0.5`` kstwo evaluates ``2 * smirnov(en, d)``, an exact sum with O(en) terms (about
    0.5 s per value at en = 5e5). With ``fast_tail`` that case uses, for ``en >= 1e5``, Miller's
    approximation ``2 * exp(-(6 en d + 1)**2 / (18 en))``, which scipy itself uses above
    en = 1e6; it differs from the exact sum by less than 3e-7 there.
    """
    from scipy.stats import kstwo

    m = np.maximum(na, nb).astype(np.float64)
    n = np.minimum(na, nb).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        en = np.round(m * n / (m + n))
        nx2 = en * d * d
        fast = fast_tail & (en >= _FAST_TAIL_N) & (d < 0.5) & (nx2 >= 2.2) & (nx2 < 370.0)
        p = np.empty(d.shape)
        p[fast] = 2.0 * np.exp(-((6.0 * en[fast] * d[fast] + 1.0) ** 2) / 18.0 / en[fast])
        slow = ~fast
        if slow.any():
            # kstwo costs 0.1-0.2 ms a value; D takes few distinct values (multiples of
            # 1 / (n_a n_b)), so each distinct (d, en) is evaluated once.
            pairs, inverse = np.unique(
                np.stack([d[slow], en[slow]], axis=1), axis=0, return_inverse=True
            )
            p[slow] = kstwo.sf(pairs[:, 0], pairs[:, 1])[inverse.reshape(-1)]
    return np.clip(p, 0.0, 1.0)


def ks_2samp(
    a: ArrayLike,
    b: ArrayLike,
    *,
    mask_a: ArrayLike | None = None,
    mask_b: ArrayLike | None = None,
    fast_tail: bool = True,
) -> KSResult:
    """Two-sample Kolmogorov-Smirnov test of every column of ``a`` against the same of ``b``.

    The statistic equals ``scipy.stats.ks_2samp(a[:, j], b[:, j]).statistic`` (ties handled: the
    empirical CDFs are compared after each group of equal values). The p-value is the asymptotic
    two-sided one of ``scipy.stats.ks_2samp(..., method="asymp")``, not the exact one scipy's
    default ``method="auto"`` uses for samples up to 10,000 events; see :func:`_ks_pvalue` for
    ``fast_tail``.

    Entries whose mask is False are left out of their column, so columns may have different
    sizes. A column with no valid entry in either sample, or with NaN in a valid entry, gives NaN.
    Each column's two samples are copied and sorted (in float32 when both are float32, else in
    float64), then both CDFs are evaluated block by block: the scratch is one column of each
    sample per thread.
    """
    a_, ma, b_, mb = _pair(a, b, mask_a, mask_b)
    if a_.shape[0] == 0 or b_.shape[0] == 0:
        nan = np.full(a_.shape[1], np.nan)
        return KSResult(nan, nan.copy())
    dtype = _work_dtype(a_, b_)

    def column(j: int) -> tuple[float, int, int]:
        sa, nan_a = _sorted_column(a_, ma, j, dtype)
        sb, nan_b = _sorted_column(b_, mb, j, dtype)
        if nan_a or nan_b or not len(sa) or not len(sb):
            return np.nan, len(sa), len(sb)
        return _ks_distance(sa, sb), len(sa), len(sb)

    column_bytes = (a_.shape[0] + b_.shape[0]) * np.dtype(dtype).itemsize
    done = _map(column, range(a_.shape[1]), column_bytes)
    d = np.array([x[0] for x in done], dtype=np.float64)
    na = np.array([x[1] for x in done], dtype=np.int64)
    nb = np.array([x[2] for x in done], dtype=np.int64)
    return KSResult(d, _ks_pvalue(d, na, nb, fast_tail))


def _count_below(rows: np.ndarray, n: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Vectorised ``searchsorted(rows[r, :n[r]], edges[r], side="left")`` for every row r."""
    lo = np.zeros(edges.shape, dtype=np.int64)
    hi = np.broadcast_to(n[:, None], edges.shape).copy()
    last = max(rows.shape[1] - 1, 0)
    while True:
        active = lo < hi
        if not active.any():
            return lo
        mid = (lo + hi) // 2
        below = np.take_along_axis(rows, np.minimum(mid, last), axis=1) < edges
        lo = np.where(active & below, mid + 1, lo)
        hi = np.where(active & ~below, mid, hi)


def _quantile_edges(rows: np.ndarray, n: np.ndarray, bins: int) -> np.ndarray:
    """Interior equal-population edges, as ``np.quantile(..., method="linear")`` in float64."""
    q = np.linspace(0.0, 1.0, bins + 1)[1:-1]
    last = np.maximum(n - 1, 0)[:, None]
    virtual = (n[:, None] - 1) * q[None, :]
    lower = np.clip(np.floor(virtual), 0, last).astype(np.int64)
    upper = np.minimum(lower + 1, last)
    gamma = virtual - lower
    lo = np.take_along_axis(rows, lower, axis=1).astype(np.float64)
    hi = np.take_along_axis(rows, upper, axis=1).astype(np.float64)
    diff = hi - lo
    return np.where(gamma >= 0.5, hi - diff * (1.0 - gamma), lo + diff * gamma)


def _collapse_edges(edges: np.ndarray, rows: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Drop interior edges equal to the smallest or largest value of each sorted row.

    Such edges coincide with the outer edges (the minimum and maximum of ``a``), as in
    ``np.unique(np.quantile(...))``. Dropped edges become -inf (low end) or repeat the previous
    kept edge (high end), which leaves bins that are always empty; so do repeated interior edges.
    """
    idx = np.maximum(n - 1, 0)[:, None]
    low = rows[:, :1].astype(np.float64)
    high = np.take_along_axis(rows, idx, axis=1).astype(np.float64)
    out = np.where((edges <= low) | (edges >= high), -np.inf, edges)
    return np.maximum.accumulate(out, axis=1)


def _binned_counts(
    a: ArrayLike,
    b: ArrayLike,
    bins: int,
    mask_a: ArrayLike | None,
    mask_b: ArrayLike | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-column histograms of a and b on the equal-population edges of a.

    Returns counts_a, counts_b (features, bins), n_a, n_b and a flag for NaN in valid entries.
    The edges are ``np.unique(np.quantile(a[:, j], linspace(0, 1, bins + 1)))``; bin k holds
    values in [e_k, e_{k+1}), values below the second edge go to the first bin and values at or
    above the last interior edge to the last bin. Collapsed edges leave always-empty bins in
    place, so every column keeps ``bins`` slots.
    """
    if int(bins) != bins or bins < 1:
        raise ValueError(f"bins must be a positive integer, got {bins!r}")
    bins = int(bins)
    a_, ma, b_, mb = _pair(a, b, mask_a, mask_b)
    dtype = _work_dtype(a_, b_)
    if a_.shape[0] == 0 or b_.shape[0] == 0:
        f = a_.shape[1]
        zeros = np.zeros((f, bins), dtype=np.int64)
        empty = np.zeros(f, dtype=np.int64)
        return zeros, zeros.copy(), empty, empty.copy(), np.zeros(f, dtype=bool)

    def block(cols: slice) -> tuple[np.ndarray, ...]:
        sa, na, nan_a = _sorted_rows(a_, ma, cols, dtype)
        edges = _collapse_edges(_quantile_edges(sa, na, bins), sa, na)
        below_a = _count_below(sa, na, edges)
        del sa
        sb, nb, nan_b = _sorted_rows(b_, mb, cols, dtype)
        below_b = _count_below(sb, nb, edges)
        zeros = np.zeros((edges.shape[0], 1), dtype=np.int64)
        ca = np.diff(np.hstack([zeros, below_a, na[:, None]]), axis=1)
        cb = np.diff(np.hstack([zeros, below_b, nb[:, None]]), axis=1)
        return ca, cb, na, nb, nan_a | nan_b

    itemsize = np.dtype(dtype).itemsize
    parts = _by_blocks(block, a_.shape[1], max(a_.shape[0], b_.shape[0]), itemsize + 1)
    if not parts:
        empty = np.empty((0, bins), dtype=np.int64)
        none = np.empty(0, dtype=np.int64)
        return empty, empty, none, none, np.empty(0, dtype=bool)
    return tuple(parts)  # type: ignore[return-value]


def _merge_bins(
    ca: np.ndarray, cb: np.ndarray, na: np.ndarray, nb: np.ndarray, min_expected: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge adjacent bins until each has expected count >= ``min_expected`` in both samples.

    Walking up from the first bin, bins are accumulated until the smaller expected count
    ``min(n_a, n_b) * total / (n_a + n_b)`` reaches ``min_expected`` (and is non-zero); a remainder
    at the top joins the last group. Returns merged counts packed to the left and the number of
    groups per column.
    """
    n_rows, n_bins = ca.shape
    total = ca + cb
    small = np.minimum(na, nb).astype(np.float64)
    grand = (na + nb).astype(np.float64)
    group = np.zeros(n_rows, dtype=np.int64)
    acc = np.zeros(n_rows, dtype=np.int64)
    gid = np.empty((n_rows, n_bins), dtype=np.int64)
    closed = np.zeros(n_rows, dtype=bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        for k in range(n_bins):
            acc += total[:, k]
            gid[:, k] = group
            closed = (acc > 0) & (small * acc / grand >= min_expected)
            group += closed
            acc[closed] = 0
    # An unfinished top group joins the previous one when there is one.
    open_top = ~closed & (group > 0)
    gid = np.where(open_top[:, None] & (gid == group[:, None]), gid - 1, gid)
    n_groups = np.where(closed | open_top, group, 1)
    flat = gid + n_bins * np.arange(n_rows)[:, None]
    size = n_rows * n_bins
    ma = np.bincount(flat.ravel(), weights=ca.ravel(), minlength=size).reshape(n_rows, n_bins)
    mb = np.bincount(flat.ravel(), weights=cb.ravel(), minlength=size).reshape(n_rows, n_bins)
    return ma.astype(np.int64), mb.astype(np.int64), n_groups


def chi2_homogeneity(
    a: ArrayLike,
    b: ArrayLike,
    bins: int = 20,
    min_expected: float = 5,
    *,
    mask_a: ArrayLike | None = None,
    mask_b: ArrayLike | None = None,
) -> Chi2Result:
    """Pearson chi-squared test that each column of ``a`` and ``b`` has the same distribution.

    Bin edges are the ``bins``-quantiles of ``a`` (equal population; edges that coincide because
    of ties collapse), both samples are histogrammed on them (values outside go to the first or
    last bin), and adjacent bins are merged until every expected count under homogeneity is at
    least ``min_expected``. The statistic and p-value are those of
    ``scipy.stats.chi2_contingency(np.vstack([counts_a, counts_b]), correction=False)`` on the
    merged counts, with ``dof = merged bins - 1``; a column left with a single bin has statistic
    0, dof 0 and p-value 1 (as scipy). NaN in a valid entry, or an empty column, gives NaN.
    """
    from scipy.stats import chi2

    ca, cb, na, nb, bad = _binned_counts(a, b, bins, mask_a, mask_b)
    ma, mb, n_groups = _merge_bins(ca, cb, na, nb, min_expected)
    bad = bad | (na == 0) | (nb == 0)
    grand = (na + nb)[:, None]
    total = ma + mb
    used = np.arange(ma.shape[1])[None, :] < n_groups[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        ea = na[:, None] * total / grand
        eb = nb[:, None] * total / grand
        terms = (ma - ea) ** 2 / ea + (mb - eb) ** 2 / eb
    stat = np.where(used, terms, 0.0).sum(axis=1)
    dof = np.where(bad, 0, n_groups - 1)
    p = np.where(dof > 0, chi2.sf(stat, np.maximum(dof, 1)), 1.0)
    stat = np.where(bad, np.nan, stat)
    p = np.where(bad, np.nan, p)
    return Chi2Result(stat, p, dof)


def js_distance(
    a: ArrayLike,
    b: ArrayLike,
    bins: int = 20,
    *,
    mask_a: ArrayLike | None = None,
    mask_b: ArrayLike | None = None,
) -> np.ndarray:
    """Jensen-Shannon distance (base 2, in [0, 1]) of each column of ``a`` and ``b``.

    Uses the binning of :func:`chi2_homogeneity` (equal-population bins of ``a``) without merging
    and equals ``scipy.spatial.distance.jensenshannon(counts_a, counts_b, base=2)``.
    """
    from scipy.special import rel_entr

    ca, cb, na, nb, bad = _binned_counts(a, b, bins, mask_a, mask_b)
    bad = bad | (na == 0) | (nb == 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = ca / ca.sum(axis=1, keepdims=True)
        q = cb / cb.sum(axis=1, keepdims=True)
        m = (p + q) / 2.0
        js = (rel_entr(p, m).sum(axis=1) + rel_entr(q, m).sum(axis=1)) / np.log(2.0)
    return np.where(bad, np.nan, np.sqrt(js / 2.0))


_CORR_CHUNK = 1 << 16  # events per chunk of the cross-product accumulation


def pearson_matrix(x: ArrayLike) -> np.ndarray:
    """Pearson correlation matrix of the columns of ``x`` (events, features), as ``np.corrcoef``.

    One pass over float64 chunks of the data shifted by its first event (shifted-data algorithm:
    accurate when that event lies within a few standard deviations of the mean, and constant
    columns become exactly zero). A constant column has correlation 0 with every other column
    (``np.corrcoef`` gives NaN); the diagonal is always 1. NaN in a column makes its row and
    column NaN.
    """
    arr, _ = _columns(x, None, "x")
    n, f = arr.shape
    if n < 2:
        raise ValueError("a correlation matrix needs at least 2 events")
    shift = arr[0].astype(np.float64)
    total = np.zeros(f)
    cross = np.zeros((f, f))
    for start in range(0, n, _CORR_CHUNK):
        chunk = arr[start : start + _CORR_CHUNK].astype(np.float64)
        chunk -= shift
        total += chunk.sum(axis=0)
        cross += chunk.T @ chunk
    mean = total / n
    cross -= n * np.outer(mean, mean)
    var = np.diag(cross).copy()
    constant = var == 0.0
    var[constant] = 1.0
    std = np.sqrt(var)
    corr = cross / std[:, None]
    corr /= std[None, :]
    np.clip(corr, -1.0, 1.0, out=corr)
    corr[constant, :] = 0.0
    corr[:, constant] = 0.0
    np.fill_diagonal(corr, 1.0)
    return corr


def correlation_change(a: ArrayLike, b: ArrayLike) -> CorrelationChange:
    """Change of the Pearson correlation matrix from the nominal ``a`` to the perturbed ``b``.

    ``max_abs`` is the largest |C_b - C_a| element and ``argmax`` its (row, column), row <= column;
    ``relative_frobenius`` is ||C_b - C_a||_F / ||C_a||_F. Constant columns: see
    :func:`pearson_matrix`.
    """
    ca = pearson_matrix(a)
    cb = pearson_matrix(b)
    if ca.shape != cb.shape:
        raise ValueError(f"a has {ca.shape[0]} features but b has {cb.shape[0]}")
    diff = np.abs(cb - ca)
    i, j = np.unravel_index(int(np.argmax(diff)), diff.shape)
    i, j = min(i, j), max(i, j)
    rel = float(np.linalg.norm(cb - ca) / np.linalg.norm(ca))
    return CorrelationChange(float(diff[i, j]), (int(i), int(j)), rel, ca, cb)


# --------------------------------------------------------------------------------------------
# ROC curves and working points (signal = label 1).
# --------------------------------------------------------------------------------------------


def _scores_weights(
    scores: ArrayLike, weights: ArrayLike | None, name: str
) -> tuple[np.ndarray, np.ndarray | None]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    if np.isnan(s).any():
        raise ValueError(f"{name} contain NaN")
    if weights is None:
        return s, None
    w = np.asarray(weights, dtype=np.float64).ravel()
    if w.shape != s.shape:
        raise ValueError(f"weights have {w.size} entries but {name} have {s.size}")
    if not np.isfinite(w).all():
        raise ValueError("weights must be finite")
    return s, w


def _check_binary(y: np.ndarray) -> None:
    """Labels must be 0 or 1 (``np.isin`` would take 40 bytes an event to check)."""
    if y.dtype != np.bool_ and not ((y == 0) | (y == 1)).all():
        raise ValueError("labels must be 0 (background) or 1 (signal)")


def _descending(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Order sorting ``s`` by decreasing score, and the last sorted index of each tie group."""
    order = np.argsort(s, kind="stable")[::-1]
    ends = np.r_[np.flatnonzero(np.diff(s[order])), s.size - 1]
    return order, ends


def roc_curve(
    labels: ArrayLike,
    scores: ArrayLike,
    weights: ArrayLike | None = None,
    *,
    drop_intermediate: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve (fpr, tpr, thresholds) for signal = 1, as ``sklearn.metrics.roc_curve``.

    Each distinct score is one point (tied scores form one step); ``thresholds[0]`` is +inf (the
    point (0, 0)) and the others are the distinct scores in decreasing order, an event passing
    when its score >= threshold. Events with weight 0 are dropped (as scikit-learn). Unlike
    scikit-learn, collinear points are kept unless ``drop_intermediate=True``.
    """
    y = np.asarray(labels).ravel()
    s, w = _scores_weights(scores, weights, "scores")
    if y.shape != s.shape:
        raise ValueError(f"labels have {y.size} entries but scores have {s.size}")
    _check_binary(y)
    y = y.astype(np.float64)
    if w is not None:
        keep = w != 0
        y, s, w = y[keep], s[keep], w[keep]
    if s.size == 0:
        raise ValueError("no events")
    order, ends = _descending(s)
    y = y[order]
    if w is None:
        tps = np.cumsum(y)[ends]
        fps = 1.0 + ends - tps
    else:
        w = w[order]
        tps = np.cumsum(y * w)[ends]
        fps = np.cumsum((1.0 - y) * w)[ends]
    thresholds = s[order][ends]
    if drop_intermediate and tps.size > 2:
        corner = np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True]
        fps, tps, thresholds = fps[corner], tps[corner], thresholds[corner]
    if tps[-1] <= 0 or fps[-1] <= 0:
        raise ValueError("the ROC curve needs signal and background with positive total weight")
    fpr = np.r_[0.0, fps] / fps[-1]
    tpr = np.r_[0.0, tps] / tps[-1]
    return fpr, tpr, np.r_[np.inf, thresholds]


_AUC_BLOCK = 1 << 16  # background scores looked up at a time


def auc(labels: ArrayLike, scores: ArrayLike, weights: ArrayLike | None = None) -> float:
    """Area under the ROC curve, as ``roc_auc_score`` (the trapezoids of :func:`roc_curve`).

    Computed as the (weighted) probability that a signal event scores above a background
    one, ties counting one half (Mann-Whitney): the signal scores sorted, the background ones
    sorted and looked up in blocks. Unweighted, the counts are exact integers and the area is
    rounded once; the scratch is about 16 bytes per event (24 per signal event weighted),
    against about 100 for the ROC curve's arrays.
    """
    y = np.asarray(labels).ravel()
    s, w = _scores_weights(scores, weights, "scores")
    if y.shape != s.shape:
        raise ValueError(f"labels have {y.size} entries but scores have {s.size}")
    _check_binary(y)
    if s.size == 0:
        raise ValueError("no events")
    signal = y == 1
    if w is None:
        n_signal, n_background = int(signal.sum()), int(s.size - signal.sum())
        if not (n_signal and n_background):
            raise ValueError("the ROC curve needs signal and background with positive total weight")
        sig = np.sort(s[signal])
        bkg = np.sort(s[~signal])
        above = ties = 0
        for start in range(0, len(bkg), _AUC_BLOCK):
            keys = bkg[start : start + _AUC_BLOCK]
            below_or_tied = _count_upto(sig, keys)
            tied = below_or_tied - _count_upto(sig, keys, side="left")
            above += n_signal * len(keys) - int(below_or_tied.sum())
            ties += int(tied.sum())
        return (above + 0.5 * ties) / (n_signal * n_background)
    order = np.argsort(s[signal], kind="stable")
    sig = s[signal][order]
    cumulative = np.cumsum(w[signal][order])
    del order
    total_signal = float(cumulative[-1]) if len(cumulative) else 0.0
    bkg, bkg_w = s[~signal], w[~signal]
    total_background = float(bkg_w.sum())
    if not (total_signal > 0 and total_background > 0):
        raise ValueError("the ROC curve needs signal and background with positive total weight")
    area = 0.0
    for start in range(0, len(bkg), _AUC_BLOCK):
        keys, weight = bkg[start : start + _AUC_BLOCK], bkg_w[start : start + _AUC_BLOCK]
        hi = np.searchsorted(sig, keys, side="right")
        lo = np.searchsorted(sig, keys, side="left")
        upto = np.where(hi > 0, cumulative[np.maximum(hi - 1, 0)], 0.0)
        below = np.where(lo > 0, cumulative[np.maximum(lo - 1, 0)], 0.0)
        area += float(weight @ ((total_signal - upto) + 0.5 * (upto - below)))
    return area / (total_signal * total_background)


def _passing_fraction_setup(
    scores: ArrayLike, weights: ArrayLike | None, name: str
) -> tuple[np.ndarray, np.ndarray | None, float]:
    s, w = _scores_weights(scores, weights, name)
    if s.size == 0:
        raise ValueError(f"no {name}")
    total = float(s.size) if w is None else float(w.sum())
    if not total > 0:
        raise ValueError(f"the total weight of the {name} must be positive")
    return s, w, total


def threshold_at_efficiency(
    signal_scores: ArrayLike, efficiency: float, weights: ArrayLike | None = None
) -> float:
    """Threshold t whose (weighted) signal fraction with score >= t is closest to ``efficiency``.

    Candidates are the observed scores (tied scores pass together); when two are equally close
    the higher threshold wins. ``efficiency`` must be in (0, 1].
    """
    if not 0 < efficiency <= 1:
        raise ValueError(f"efficiency must be in (0, 1], got {efficiency}")
    s, w, total = _passing_fraction_setup(signal_scores, weights, "signal scores")
    order, ends = _descending(s)
    kept = ends + 1.0 if w is None else np.cumsum(w[order])[ends]
    passing = kept / total
    best = int(np.argmin(np.abs(passing - efficiency)))
    return float(s[order[ends[best]]])


def background_rejection(
    background_scores: ArrayLike, threshold: float, weights: ArrayLike | None = None
) -> float:
    """1 / (weighted) fraction of background with score >= ``threshold``; inf if none passes."""
    s, w, total = _passing_fraction_setup(background_scores, weights, "background scores")
    passing = s >= threshold
    kept = float(passing.sum()) if w is None else float(w[passing].sum())
    if kept <= 0:
        return float("inf")
    return total / kept


def auc_standard_error(area: float, n_signal: float, n_background: float) -> float:
    """Standard error of an AUC from the numbers of signal and background events.

    Hanley and McNeil (Radiology 143 (1982) 29); pass effective numbers for weighted samples.
    """
    if n_signal <= 0 or n_background <= 0:
        raise ValueError("need signal and background events")
    q1 = area / (2.0 - area)
    q2 = 2.0 * area * area / (1.0 + area)
    variance = (
        area * (1.0 - area)
        + (n_signal - 1.0) * (q1 - area * area)
        + (n_background - 1.0) * (q2 - area * area)
    ) / (n_signal * n_background)
    return float(np.sqrt(max(variance, 0.0)))


def effective_count(weights: np.ndarray | None, n: int) -> float:
    """Kish's effective number of events, (sum w)^2 / sum w^2 (n when unweighted)."""
    if weights is None:
        return float(n)
    total = float(weights.sum())
    return total * total / float((weights * weights).sum()) if total > 0 else 0.0
