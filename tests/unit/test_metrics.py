"""Pure metrics against values worked out by hand (shown in the comments) or by brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from reface.evaluate.metrics import (
    bootstrap_ci,
    dice,
    rank_k_rate,
    relative_volume_difference,
    similarity_matrix,
    verification_auc,
)

NAN = float("nan")


def test_similarity_matrix_is_cosine_with_nan_for_missing_faces():
    probes = [np.array([1.0, 0.0]), np.array([0.0, 2.0]), None]
    gallery = [np.array([1.0, 1.0]), np.array([0.0, -1.0])]
    r = 1 / np.sqrt(2)
    expected = np.array([[r, 0.0], [r, -1.0], [NAN, NAN]])
    np.testing.assert_allclose(similarity_matrix(probes, gallery), expected, atol=1e-12)
    assert np.isnan(similarity_matrix([None], [np.ones(3)])).all()
    with pytest.raises(ValueError):
        similarity_matrix([np.ones(2)], [np.ones(3)])


# probe 0 (a): genuine 0.9 beats impostors 0.5, 0.1             -> rank 1
# probe 1 (b): genuine 0.3, impostor 0.8 above it               -> rank 2
# probe 2 (c): genuine 0.5, impostor 0.6 above it, 0.4 below    -> rank 2
# probe 3 (a): no face (NaN row)                                 -> miss
SIM = np.array([[0.9, 0.5, 0.1], [0.2, 0.3, 0.8], [0.4, 0.6, 0.5], [NAN, NAN, NAN]])
PROBES = ["a", "b", "c", "a"]
GALLERY = ["a", "b", "c"]


@pytest.mark.parametrize("k, expected", [(1, 1 / 4), (2, 3 / 4), (3, 3 / 4)])
def test_rank_k_rate_by_hand(k, expected):
    assert rank_k_rate(SIM, PROBES, GALLERY, k) == pytest.approx(expected)


def test_rank_k_ties_count_against_the_attacker_and_best_genuine_counts():
    assert rank_k_rate(np.array([[0.5, 0.5]]), ["a"], ["a", "b"], 1) == 0.0
    # two gallery images of "a": the better one (0.7) outranks the impostor (0.6)
    assert rank_k_rate(np.array([[0.2, 0.7, 0.6]]), ["a"], ["a", "a", "b"], 1) == 1.0
    with pytest.raises(ValueError, match="absent"):
        rank_k_rate(np.array([[0.2]]), ["z"], ["a"], 1)
    with pytest.raises(ValueError):
        rank_k_rate(SIM, PROBES[:2], GALLERY, 1)


def test_verification_auc_by_hand():
    # genuine pairs: 0.9 (a,a), 0.4 (b,b); impostor pairs: 0.5 (a,b), 0.6 (b,a)
    # 0.9 beats both impostors, 0.4 beats neither -> 2 of 4 comparisons
    sim = np.array([[0.9, 0.5], [0.6, 0.4]])
    assert verification_auc(sim, ["a", "b"], ["a", "b"]) == pytest.approx(0.5)
    # a tie between the genuine score and the impostor score counts one half
    assert verification_auc(np.array([[0.5, 0.5]]), ["a"], ["a", "b"]) == pytest.approx(0.5)
    # perfect separation
    assert verification_auc(np.array([[0.9, 0.1], [0.2, 0.8]]), ["a", "b"], ["a", "b"]) == 1.0
    # a probe with no face: its genuine pair ranks below every real impostor score, ties with its own NaN
    # impostor. genuine {0.9, NaN} vs impostor {0.1, NaN}: 0.9 beats both (2), NaN beats none, ties NaN (0.5)
    sim = np.array([[0.9, 0.1], [NAN, NAN]])
    assert verification_auc(sim, ["a", "b"], ["a", "b"]) == pytest.approx(2.5 / 4)
    with pytest.raises(ValueError):
        verification_auc(np.array([[0.9]]), ["a"], ["a"])  # no impostor pair


def test_verification_auc_matches_brute_force_pair_counting():
    rng = np.random.default_rng(3)
    sim = np.round(rng.normal(size=(7, 9)), 1)  # rounding creates ties
    probe_ids = list(rng.integers(0, 4, 7))
    gallery_ids = list(rng.integers(0, 4, 9))
    gen, imp = [], []
    for i, j in itertools.product(range(7), range(9)):
        (gen if probe_ids[i] == gallery_ids[j] else imp).append(sim[i, j])
    wins = sum((g > m) + 0.5 * (g == m) for g in gen for m in imp)
    assert verification_auc(sim, probe_ids, gallery_ids) == pytest.approx(wins / (len(gen) * len(imp)))


def test_bootstrap_ci_of_a_mean():
    values = np.array([0.0, 1.0] * 200)  # mean 0.5, standard error sqrt(0.25 / 400) = 0.025

    def mean_of(idx):
        return float(values[idx].mean())

    low, high = bootstrap_ci(mean_of, len(values), n_boot=2000, seed=1)
    assert 0.5 - 0.06 < low < 0.5 - 0.04 and 0.5 + 0.04 < high < 0.5 + 0.06  # about +-1.96 * 0.025
    assert bootstrap_ci(mean_of, len(values), n_boot=200, seed=1) == bootstrap_ci(mean_of, len(values), n_boot=200,
                                                                                  seed=1)
    assert bootstrap_ci(lambda idx: 3.0, 10, n_boot=50) == (3.0, 3.0)
    narrow = bootstrap_ci(mean_of, len(values), n_boot=2000, seed=1, alpha=0.5)
    assert low < narrow[0] <= narrow[1] < high


def test_dice_and_relative_volume_difference_by_hand():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[0, :4] = True  # 4 voxels
    b[0, 1:4] = True
    b[1, :3] = True  # 6 voxels, 3 shared with a
    assert dice(a, b) == pytest.approx(2 * 3 / (4 + 6))
    assert dice(a, a) == 1.0
    assert dice(np.zeros(3, bool), np.zeros(3, bool)) == 1.0
    assert dice(a, np.zeros_like(a)) == 0.0
    assert relative_volume_difference(a, b) == pytest.approx((4 - 6) / 6)
    assert relative_volume_difference(b, a) == pytest.approx((6 - 4) / 4)
    with pytest.raises(ValueError):
        relative_volume_difference(a, np.zeros_like(a))
    with pytest.raises(ValueError):
        dice(a, np.zeros((2, 2), bool))


def test_identification_ranks_by_hand():
    from reface.evaluate.metrics import identification_ranks

    # a: genuine 0.9 beats both impostors -> 1; b: genuine 0.4 below 0.6 and tied with 0.4 -> 3; c: no face
    sim = np.array([[0.9, 0.5, 0.1], [0.6, 0.4, 0.4], [NAN, NAN, NAN]])
    ranks = identification_ranks(sim, ["a", "b", "c"], ["a", "b", "c"])
    np.testing.assert_array_equal(ranks, [1.0, 3.0, np.inf])
    assert rank_k_rate(sim, ["a", "b", "c"], ["a", "b", "c"], 3) == pytest.approx(2 / 3)
