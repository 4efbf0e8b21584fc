"""The layout of a comparison: each group's videos summed per source (cells), the two-way least-squares means
(score = group effect + source effect + error) and their source (or two-stage cluster) bootstrap.

Without a source key every video is its own cell. With one, a group's figure is its least-squares mean: its effect
plus the mean effect of the sources of its connected layout, refitted in every resample (see
:mod:`thqa.analysis.comparison`)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components


def multinomial(rng: np.random.Generator, k: int, n_boot: int) -> np.ndarray:
    """(n_boot, k) counts: how often each of k units is drawn in each bootstrap resample of size k."""
    draws = rng.integers(0, k, size=(n_boot, k)) + k * np.arange(n_boot)[:, None]
    return np.bincount(draws.ravel(), minlength=n_boot * k).reshape(n_boot, k)



@dataclass(frozen=True)
class Cells:
    """One group's videos summed per source (per video when there is no source key): K units."""

    sources: np.ndarray  #: (K,) unit keys, sorted
    n: np.ndarray  #: (K,) videos per unit
    pred: np.ndarray  #: (K,) sum of predictions
    label: np.ndarray | None  #: (K,) sum of labels

    @property
    def k(self) -> int:
        return int(self.sources.size)

    def mean(self, what: str = "pred") -> float:
        return float(getattr(self, what).sum() / self.n.sum())


def group_cells(pred: np.ndarray, label: np.ndarray | None, sources: np.ndarray) -> Cells:
    keys, inv = np.unique(sources, return_inverse=True)
    n = np.bincount(inv, minlength=keys.size).astype(np.float64)
    ps = np.bincount(inv, weights=pred, minlength=keys.size)
    ls = None if label is None else np.bincount(inv, weights=label, minlength=keys.size)
    return Cells(keys, n, ps, ls)


def boot_means(c: Cells, w: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Bootstrap means (R,) of predictions and labels for resample counts ``w`` (R, K)."""
    n = w @ c.n
    return (w @ c.pred) / n, None if c.label is None else (w @ c.label) / n



# ------------------------------------------------------------------------------------ generator + source effects
def _components(n: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """Connected parts of the groups x sources layout ``n`` (G, S) (a group and a source are linked when the group
    has videos of the source): (count, part of each group (G,), part of each source (S,))."""
    g, s = np.nonzero(n)
    size = n.shape[0] + n.shape[1]
    graph = coo_matrix((np.ones(g.size), (g, n.shape[0] + s)), shape=(size, size))
    k, lab = connected_components(graph, directed=False)
    return k, lab[: n.shape[0]], lab[n.shape[0]:]


def _ls_means(n: np.ndarray, sums: list[np.ndarray], w: np.ndarray) -> list[np.ndarray]:
    """Least-squares means of the two-way layout y = group + source + error, for source weights ``w`` (R, S).

    ``n`` (G, S) videos per cell, ``sums`` [(G, S)] cell sums (predictions, labels), one connected layout.
    The group effects solve the reduced normal equations sum_s w_s (diag(n_s) - n_s n_s' / N_s) a = sum_s w_s
    (y_s - n_s ybar_s); the least-squares mean of a group is its effect plus the mean source effect over the
    (drawn) sources. Returns one (R, G) array per sum; NaN where a group drew no source or the drawn layout
    falls apart (its groups no longer linked through shared sources)."""
    g_n, s_n = n.shape
    tot = n.sum(axis=0)  # (S,)
    cs = np.einsum("gs,gh->sgh", n, np.eye(g_n)) - np.einsum("gs,hs->sgh", n, n) / tot[:, None, None]  # (S, G, G)
    c = (w @ cs.reshape(s_n, -1)).reshape(-1, g_n, g_n)  # (R, G, G)
    active = (w @ n.T) > 0  # (R, G)
    af = active.astype(np.float64)
    a_mat = c + af[:, :, None] * af[:, None, :] / np.maximum(af.sum(axis=1), 1)[:, None, None] + np.eye(g_n)[None] * (1 - af)[:, :, None]
    rhs = []
    for y in sums:
        q = (y - n * (y.sum(axis=0) / tot)[None, :]).T  # (S, G)
        rhs.append(w @ q)
    b = np.stack(rhs, axis=2)  # (R, G, C)
    try:
        alpha = np.linalg.solve(a_mat, b)
    except np.linalg.LinAlgError:
        alpha = np.full_like(b, math.nan)
        for r in range(b.shape[0]):
            try:
                alpha[r] = np.linalg.solve(a_mat[r], b[r])
            except np.linalg.LinAlgError:
                pass
    out = []
    for j, y in enumerate(sums):
        a = alpha[:, :, j]  # (R, G)
        beta = (y.sum(axis=0)[None, :] - a @ n) / tot[None, :]  # (R, S)
        mean_beta = (w * beta).sum(axis=1) / w.sum(axis=1)
        m = a + mean_beta[:, None]
        m[~active] = math.nan
        out.append(m)
    return out


def _source_weights(rng: np.random.Generator, n_boot: int, keys: np.ndarray, cluster_of: dict[str, str]) -> np.ndarray:
    """(R, S) two-stage bootstrap counts of the sources ``keys``: clusters drawn with replacement, then in each drawn
    cluster its sources drawn with replacement (as many as it has)."""
    clusters, inv = np.unique([cluster_of[str(k)] for k in keys], return_inverse=True)
    m = multinomial(rng, clusters.size, n_boot)  # (R, C) draws of each cluster
    w = np.zeros((n_boot, keys.size))
    for c in range(clusters.size):
        idx = np.flatnonzero(inv == c)
        w[:, idx] = rng.multinomial(m[:, c] * idx.size, np.full(idx.size, 1.0 / idx.size))
    return w


def adjusted_means(cells: list[Cells], rng: np.random.Generator, n_boot: int, cluster_of: dict[str, str] | None = None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Least-squares means (G,) of predictions (and labels) with the sources' effects taken out, and their bootstrap
    replicates (R, G): sources resampled within each connected part of the layout (a group's videos of a source
    stay together); with ``cluster_of`` (source -> cluster), two-stage over all sources (:func:`_source_weights`).
    Groups that share no source with any other group get the mean of their sources' means."""
    keys = np.unique(np.concatenate([c.sources for c in cells]))
    what = ["pred"] + (["label"] if cells[0].label is not None else [])
    n = np.zeros((len(cells), keys.size))
    sums = [np.zeros_like(n) for _ in what]
    for i, c in enumerate(cells):
        idx = np.searchsorted(keys, c.sources)
        n[i, idx] = c.n
        for y, wname in zip(sums, what):
            y[i, idx] = getattr(c, wname)
    k, gpart, spart = _components(n)
    points = [np.full(len(cells), math.nan) for _ in what]
    boots = [np.full((n_boot, len(cells)), math.nan) for _ in what]
    w_all = None if cluster_of is None else _source_weights(rng, n_boot, keys, cluster_of)
    for part in range(k):
        gi, si = np.flatnonzero(gpart == part), np.flatnonzero(spart == part)
        sub_n, sub = n[np.ix_(gi, si)], [y[np.ix_(gi, si)] for y in sums]
        for j, m in enumerate(_ls_means(sub_n, sub, np.ones((1, si.size)))):
            points[j][gi] = m[0]
        w = multinomial(rng, si.size, n_boot).astype(np.float64) if w_all is None else w_all[:, si]
        with np.errstate(invalid="ignore", divide="ignore"):
            for j, m in enumerate(_ls_means(sub_n, sub, w)):
                boots[j][:, gi] = m
    return points, boots

