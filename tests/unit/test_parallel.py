"""Threaded separable filters (reface.parallel) give scipy.ndimage's numbers exactly, whatever the split."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from reface import parallel


@pytest.fixture()
def volume():
    # big enough to be split (MIN_VOXELS), odd sizes so the slabs are uneven
    return np.random.default_rng(0).standard_normal((101, 113, 97)).astype(np.float32)


@pytest.mark.parametrize("workers", ["1", "2", "3"])
@pytest.mark.parametrize("sigma", [1.0, (0.5, 1.5, 2.5), (0.0, 1.0, 2.0)])
@pytest.mark.parametrize("mode", ["reflect", "constant", "nearest", "wrap"])
def test_gaussian_filter_matches_scipy_bit_for_bit(volume, monkeypatch, workers, sigma, mode):
    monkeypatch.setenv("OMP_NUM_THREADS", workers)
    out = parallel.gaussian_filter(volume, sigma, mode=mode)
    assert out.dtype == np.float32
    assert np.array_equal(out, ndi.gaussian_filter(volume, sigma, mode=mode))


def test_gaussian_filter_leaves_its_input_alone_and_takes_any_layout(volume, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    before = volume.copy()
    fortran = np.asfortranarray(volume)
    assert np.array_equal(parallel.gaussian_filter(fortran, 2.0), ndi.gaussian_filter(volume, 2.0))
    assert np.array_equal(volume, before)
    same = parallel.gaussian_filter(volume, 0.0)  # no width on any axis: a copy, as scipy gives
    assert np.array_equal(same, volume) and same is not volume
    with pytest.raises(TypeError):
        parallel.gaussian_filter(volume > 0, 1.0)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_correlate1d_matches_scipy(volume, monkeypatch, axis):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    weights = np.array([0.1, 0.2, 0.4, 0.2, 0.1], np.float32)
    expected = ndi.correlate1d(volume, weights, axis=axis, mode="wrap")
    assert np.array_equal(parallel.correlate1d(volume, weights, axis, mode="wrap"), expected)


def test_workers_follow_omp_num_threads(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert parallel.workers() == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "")
    assert 1 <= parallel.workers() <= parallel.MAX_WORKERS
