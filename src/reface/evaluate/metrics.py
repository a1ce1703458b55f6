"""Pure metric functions: identification / verification from similarity scores, bootstrap intervals,
and mask overlap. No I/O, no state; options are keyword-only.

A probe whose face was not found has no embedding: its similarity row is NaN and it counts as a failure of
the attacker (a miss for rank-k, the lowest possible score for verification).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy.stats import rankdata


def similarity_matrix(probes: Sequence[np.ndarray | None], gallery: Sequence[np.ndarray | None]) -> np.ndarray:
    """Cosine similarity [P, G] of probe and gallery embeddings; NaN where either embedding is None."""
    probes, gallery = list(probes), list(gallery)
    dims = {np.asarray(v).size for v in probes + gallery if v is not None}
    if len(dims) > 1:
        raise ValueError(f"embeddings of different sizes: {sorted(dims)}")
    dim = dims.pop() if dims else 1

    def stack(vectors: list) -> np.ndarray:  # [N, dim], unit rows, NaN rows for missing embeddings
        out = np.full((len(vectors), dim), np.nan)
        for i, v in enumerate(vectors):
            if v is not None:
                v = np.asarray(v, dtype=np.float64).ravel()
                norm = np.linalg.norm(v)
                if norm > 0:
                    out[i] = v / norm
        return out

    p, g = stack(probes), stack(gallery)
    sim = p @ g.T
    assert sim.shape == (len(probes), len(gallery))
    return sim


def _validate(sim: np.ndarray, probe_ids: Sequence, gallery_ids: Sequence) -> tuple[np.ndarray, np.ndarray,
                                                                                      np.ndarray]:
    sim = np.asarray(sim, dtype=np.float64)
    if sim.ndim != 2 or sim.shape != (len(probe_ids), len(gallery_ids)):
        raise ValueError(f"similarity matrix {sim.shape} does not match {len(probe_ids)} probes x "
                         f"{len(gallery_ids)} gallery items")
    return sim, np.asarray(probe_ids, dtype=object), np.asarray(gallery_ids, dtype=object)


def identification_ranks(sim: np.ndarray, probe_ids: Sequence, gallery_ids: Sequence) -> np.ndarray:
    """Rank [P] of each probe's true identity in the gallery; inf where the probe has no embedding.

    The rank is 1 + the number of impostor gallery items scoring at least as high as the best genuine item
    (ties count against the attacker). A probe's rank does not depend on the other probes, so a bootstrap
    over probes may resample these ranks. Every probe identity must be in the gallery (closed set).
    """
    sim, pid, gid = _validate(sim, probe_ids, gallery_ids)
    if len(pid) == 0:
        raise ValueError("no probes")
    missing = sorted(map(str, set(pid.tolist()) - set(gid.tolist())))
    if missing:
        raise ValueError(f"probe identities absent from the gallery: {missing[:5]}")
    ranks = np.full(len(pid), np.inf)
    for i, identity in enumerate(pid):
        row = np.where(np.isnan(sim[i]), -np.inf, sim[i])
        genuine = gid == identity
        best = row[genuine].max()
        if best > -np.inf:
            ranks[i] = 1 + int(np.count_nonzero(row[~genuine] >= best))
    return ranks


def rank_k_rate(sim: np.ndarray, probe_ids: Sequence, gallery_ids: Sequence, k: int) -> float:
    """Fraction of probes whose true identity is among the k most similar gallery identities
    (see identification_ranks; a probe with no embedding is a miss)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return float((identification_ranks(sim, probe_ids, gallery_ids) <= k).mean())


def verification_auc(sim: np.ndarray, probe_ids: Sequence, gallery_ids: Sequence) -> float:
    """Area under the ROC of genuine (same identity) vs impostor pairs: P(genuine > impostor), ties 1/2.

    Computed with the Mann-Whitney U statistic over all probe x gallery pairs; NaN scores (no face)
    rank below every real score.
    """
    sim, pid, gid = _validate(sim, probe_ids, gallery_ids)
    genuine = pid[:, None] == gid[None, :]
    n_gen, n_imp = int(genuine.sum()), int((~genuine).sum())
    if n_gen == 0 or n_imp == 0:
        raise ValueError(f"need genuine and impostor pairs, got {n_gen} and {n_imp}")
    scores = np.where(np.isnan(sim), -np.inf, sim).ravel()
    ranks = rankdata(scores)  # average ranks: ties share credit
    u = ranks[genuine.ravel()].sum() - n_gen * (n_gen + 1) / 2.0
    return float(u / (n_gen * n_imp))


def bootstrap_ci(fn: Callable[[np.ndarray], float], n_items: int, *, n_boot: int = 1000, seed: int = 0,
                 alpha: float = 0.05) -> tuple[float, float]:
    """Percentile bootstrap interval (1 - alpha) of fn(indices), resampling n_items (the probes) with
    replacement. `fn` receives an int array of n_items indices; NaN results are ignored."""
    if n_items < 1:
        raise ValueError("bootstrap needs at least one item")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    rng = np.random.default_rng(seed)
    values = np.array([fn(rng.integers(0, n_items, size=n_items)) for _ in range(n_boot)], dtype=np.float64)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    low, high = np.percentile(values, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(low), float(high)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap 2|A & B| / (|A| + |B|) of two boolean masks (1.0 when both are empty)."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"mask shapes differ: {a.shape} vs {b.shape}")
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def relative_volume_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Signed (|A| - |B|) / |B| of mask `a` against reference mask `b` (0 = same volume)."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"mask shapes differ: {a.shape} vs {b.shape}")
    ref = int(b.sum())
    if ref == 0:
        raise ValueError("reference mask is empty")
    return (int(a.sum()) - ref) / ref
