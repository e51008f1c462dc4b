"""Statistics used by the checks, each tested against scipy or an independent computation."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

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


# --------------------------------------------------------------------------------------------
# Two-sample comparisons of feature distributions, every column at once.
#
# Inputs are 2-D arrays ``(events, features)``. Optional boolean masks of the same shape mark the
# entries that take part (False = padding, excluded from that column). Internally each block of
# columns is copied into rows ``(features, events)`` as floats, excluded entries are set to NaN
# (NumPy sorts NaN last, so after sorting a row its valid values come first), and the row is
# sorted once. Columns are processed in blocks that bound memory; blocks run on a small thread
# pool (NumPy releases the GIL while sorting), so the only Python loops are over blocks of columns,
# over histogram bins and over binary-search steps, never over events.
# --------------------------------------------------------------------------------------------

_BLOCK_VALUES = 1 << 22  # values per sample and block of columns (a few tens of MB of scratch)


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
    rows = np.array(x[:, cols].T, dtype=dtype, order="C")
    nan = np.isnan(rows)
    if mask is None:
        has_nan = nan.any(axis=1)
        n = np.full(rows.shape[0], rows.shape[1], dtype=np.int64)
    else:
        keep = mask[:, cols].T
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


def _by_blocks(fn: Callable[[slice], tuple[np.ndarray, ...]], n_cols: int, n_rows: int) -> list:
    """Apply ``fn`` to blocks of columns (threads when there are several) and concatenate."""
    per = max(1, _BLOCK_VALUES // max(n_rows, 1))
    blocks = [slice(i, min(i + per, n_cols)) for i in range(0, n_cols, per)]
    workers = min(len(blocks), _n_threads())
    if workers <= 1:
        parts = [fn(s) for s in blocks]
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            parts = list(pool.map(fn, blocks))
    if not parts:
        return []
    return [np.concatenate(p) for p in zip(*parts, strict=True)]


def _as_float32(rows: np.ndarray) -> np.ndarray | None:
    """``rows`` as float32 if that is exact (float32 data, integers below 2**24), else None."""
    if rows.dtype == np.float32:
        return rows
    with np.errstate(over="ignore", invalid="ignore"):
        narrow = rows.astype(np.float32)
        return narrow if np.array_equal(narrow, rows, equal_nan=True) else None


def _ks_keys(ra: np.ndarray, rb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Counts of b entries and group ends in the merged order of float32 rows ``ra``, ``rb``.

    Each value becomes an int64 key: the float32 bits mapped to an order-preserving integer,
    shifted left once, with the low bit 1 for entries of b. One integer sort per row then merges
    both samples; equal values stay adjacent (a before b), NaN (excluded entries) sort last.
    """
    len_a = ra.shape[1]
    keys = np.empty((ra.shape[0], len_a + rb.shape[1]), dtype=np.int64)
    for rows, part in ((ra, keys[:, :len_a]), (rb, keys[:, len_a:])):
        bits = (rows + np.float32(0.0)).view(np.int32)  # -0.0 becomes +0.0, as == treats it
        bits ^= (bits >> 31) & 0x7FFFFFFF
        part[...] = bits
    keys <<= 1
    keys[:, len_a:] |= 1
    keys.sort(axis=1)
    cb = np.cumsum(keys & 1, axis=1, dtype=_count_dtype(keys.shape[1]))
    ends = np.empty(keys.shape, dtype=bool)
    x = np.bitwise_xor(keys[:, 1:], keys[:, :-1])
    x >>= 1
    np.not_equal(x, 0, out=ends[:, :-1])
    ends[:, -1] = True
    return cb, ends


def _ks_merge(sa: np.ndarray, sb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """As :func:`_ks_keys` for sorted rows of any float type (a stable argsort merge)."""
    len_a = sa.shape[1]
    merged = np.concatenate([sa, sb], axis=1)
    # A stable argsort of two concatenated sorted runs is a single timsort merge.
    order = np.argsort(merged, axis=1, kind="stable")
    values = np.take_along_axis(merged, order, axis=1)
    del merged
    cb = np.cumsum(order >= len_a, axis=1, dtype=_count_dtype(values.shape[1]))
    del order
    ends = np.empty(values.shape, dtype=bool)
    np.not_equal(values[:, 1:], values[:, :-1], out=ends[:, :-1])
    ends[:, -1] = True
    return cb, ends


def _count_dtype(n: int) -> type[np.signedinteger]:
    return np.int32 if n < 2**31 - 1 else np.int64


def _ks_statistic(cb: np.ndarray, ends: np.ndarray, na: np.ndarray, nb: np.ndarray) -> np.ndarray:
    """KS statistic from b counts ``cb`` along the merged order, exactly as scipy computes it.

    F_a - F_b is only evaluated at the last entry of each group of equal values (``ends``) among
    the valid entries, which come first; at the last valid one it is 0, so zeroing the other
    positions cannot create an extreme.
    """
    pos = np.arange(1, cb.shape[1] + 1, dtype=np.int64)
    nt = (na + nb)[:, None]
    ends &= pos <= nt
    # Exact integer numerator of F_a - F_b = (pos - cb) / na - cb / nb, times na * nb.
    num = pos * nb[:, None]
    num -= cb * nt
    num *= ends
    rows = np.arange(num.shape[0])
    d = np.zeros(num.shape[0])
    with np.errstate(divide="ignore", invalid="ignore"):
        for pick, sign in ((num.argmax(axis=1), 1.0), (num.argmin(axis=1), -1.0)):
            c_b = cb[rows, pick].astype(np.int64)
            c_a = pos[pick] - c_b
            diff = sign * (c_a / na - c_b / nb)  # the float operations scipy does
            extreme = sign * num[rows, pick] > 0
            d = np.maximum(d, np.where(extreme, np.clip(diff, 0.0, 1.0), 0.0))
    return d


def ks_2samp(
    a: ArrayLike,
    b: ArrayLike,
    *,
    mask_a: ArrayLike | None = None,
    mask_b: ArrayLike | None = None,
) -> KSResult:
    """Two-sample Kolmogorov-Smirnov test of every column of ``a`` against the same of ``b``.

    The statistic equals ``scipy.stats.ks_2samp(a[:, j], b[:, j]).statistic`` (ties handled: the
    empirical CDFs are compared after each group of equal values). The p-value is the asymptotic
    two-sided one, as ``scipy.stats.ks_2samp(..., method="asymp")``: ``kstwo.sf(D, round(en))``
    with ``en = n_a * n_b / (n_a + n_b)`` (NumPy's round-half-to-even), clipped to [0, 1]. It is
    conservative-to-accurate for large samples but approximate for small ones, where scipy's
    default ``method="auto"`` would use the exact distribution instead.

    Entries whose mask is False are left out of their column, so columns may have different
    sizes. A column with no valid entry in either sample, or with NaN in a valid entry, gives NaN.
    """
    from scipy.stats import kstwo

    a_, ma, b_, mb = _pair(a, b, mask_a, mask_b)
    dtype = _work_dtype(a_, b_)

    def block(cols: slice) -> tuple[np.ndarray, ...]:
        ra, na, nan_a = _rows(a_, ma, cols, dtype)
        rb, nb, nan_b = _rows(b_, mb, cols, dtype)
        ra32, rb32 = _as_float32(ra), _as_float32(rb)
        if ra32 is not None and rb32 is not None:
            cb, ends = _ks_keys(ra32, rb32)
        else:
            ra.sort(axis=1)
            rb.sort(axis=1)
            cb, ends = _ks_merge(ra, rb)
        return _ks_statistic(cb, ends, na, nb), na, nb, nan_a | nan_b

    parts = _by_blocks(block, a_.shape[1], a_.shape[0] + b_.shape[0])
    if not parts:
        return KSResult(np.empty(0), np.empty(0))
    d, na, nb, bad = parts
    bad |= (na == 0) | (nb == 0)
    d = np.where(bad, np.nan, d)
    m = np.maximum(na, nb).astype(np.float64)
    n = np.minimum(na, nb).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        en = m * n / (m + n)
        p = np.where(bad, np.nan, kstwo.sf(d, np.round(en)))
    return KSResult(d, np.clip(p, 0.0, 1.0))


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


def _binned_counts(
    a: ArrayLike,
    b: ArrayLike,
    bins: int,
    mask_a: ArrayLike | None,
    mask_b: ArrayLike | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-column histograms of a and b on the equal-population edges of a.

    Returns counts_a, counts_b (features, bins), n_a, n_b and a flag for NaN in valid entries.
    Bin k holds values in [e_k, e_{k+1}); values below the first interior edge go to bin 0 and
    values at or above the last to the last bin. Duplicate edges (ties) give bins that are always
    empty, which is the same as collapsing them.
    """
    if int(bins) != bins or bins < 1:
        raise ValueError(f"bins must be a positive integer, got {bins!r}")
    bins = int(bins)
    a_, ma, b_, mb = _pair(a, b, mask_a, mask_b)
    dtype = _work_dtype(a_, b_)

    def block(cols: slice) -> tuple[np.ndarray, ...]:
        sa, na, nan_a = _sorted_rows(a_, ma, cols, dtype)
        edges = _quantile_edges(sa, na, bins)
        below_a = _count_below(sa, na, edges)
        del sa
        sb, nb, nan_b = _sorted_rows(b_, mb, cols, dtype)
        below_b = _count_below(sb, nb, edges)
        zeros = np.zeros((edges.shape[0], 1), dtype=np.int64)
        ca = np.diff(np.hstack([zeros, below_a, na[:, None]]), axis=1)
        cb = np.diff(np.hstack([zeros, below_b, nb[:, None]]), axis=1)
        return ca, cb, na, nb, nan_a | nan_b

    parts = _by_blocks(block, a_.shape[1], max(a_.shape[0], b_.shape[0]))
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

    Two passes (mean, then centred cross-products in float64 chunks). A constant column has
    correlation 0 with every other column (``np.corrcoef`` gives NaN); the diagonal is always 1.
    """
    arr, _ = _columns(x, None, "x")
    n, f = arr.shape
    if n < 2:
        raise ValueError("a correlation matrix needs at least 2 events")
    mean = arr.mean(axis=0, dtype=np.float64)
    constant = arr.min(axis=0) == arr.max(axis=0)
    cross = np.zeros((f, f))
    for start in range(0, n, _CORR_CHUNK):
        chunk = arr[start : start + _CORR_CHUNK].astype(np.float64) - mean
        cross += chunk.T @ chunk
    std = np.sqrt(np.diag(cross))
    std[constant] = 1.0
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
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 (background) or 1 (signal)")
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


def auc(labels: ArrayLike, scores: ArrayLike, weights: ArrayLike | None = None) -> float:
    """Area under the ROC curve (trapezoids, so ties count one half), as ``roc_auc_score``."""
    fpr, tpr, _ = roc_curve(labels, scores, weights)
    return float((np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0).sum())


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
