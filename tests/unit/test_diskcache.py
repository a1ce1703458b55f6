"""The per-user cache of derived arrays: a hit returns what was written, a changed source misses, and a
cache that cannot be used only costs time."""

from __future__ import annotations

import numpy as np

from reface import diskcache


def _counting(arrays):
    calls = []

    def compute():
        calls.append(1)
        return {k: v.copy() for k, v in arrays.items()}

    return compute, calls


def test_second_call_reads_the_cache_and_a_changed_source_misses(tmp_path, monkeypatch):
    monkeypatch.setenv(diskcache.ENV, str(tmp_path / "cache"))
    source = tmp_path / "source.bin"
    source.write_bytes(b"template v1")
    arrays = {"head": np.arange(24, dtype=np.float32).reshape(2, 3, 4), "brain": np.eye(3, dtype=bool)}
    compute, calls = _counting(arrays)

    first = diskcache.cached_arrays("thing", [source, "code"], compute)
    second = diskcache.cached_arrays("thing", [source, "code"], compute)
    assert len(calls) == 1
    for got in (first, second):
        assert set(got) == set(arrays)
        for k in arrays:
            assert got[k].dtype == arrays[k].dtype and np.array_equal(got[k], arrays[k])
    assert len(list((tmp_path / "cache").glob("thing-*.npz"))) == 1
    assert not list((tmp_path / "cache").glob(".thing-*"))  # no temp file left behind

    source.write_bytes(b"template v2")  # a source that changed: derived again, under a new key
    diskcache.cached_arrays("thing", [source, "code"], compute)
    diskcache.cached_arrays("thing", [source, "other code"], compute)
    assert len(calls) == 3


def test_off_and_unusable_caches_still_compute(tmp_path, monkeypatch):
    arrays = {"a": np.ones(3)}
    compute, calls = _counting(arrays)
    monkeypatch.setenv(diskcache.ENV, "off")
    assert diskcache.cache_dir() is None
    assert np.array_equal(diskcache.cached_arrays("x", ["k"], compute)["a"], arrays["a"])
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(diskcache.ENV, str(blocker / "cache"))  # cannot be created
    assert np.array_equal(diskcache.cached_arrays("x", ["k"], compute)["a"], arrays["a"])
    assert len(calls) == 2


def test_a_corrupt_entry_is_derived_again(tmp_path, monkeypatch):
    monkeypatch.setenv(diskcache.ENV, str(tmp_path))
    compute, calls = _counting({"a": np.arange(5)})
    diskcache.cached_arrays("x", ["k"], compute)
    (entry,) = tmp_path.glob("x-*.npz")
    entry.write_bytes(b"truncated")
    assert np.array_equal(diskcache.cached_arrays("x", ["k"], compute)["a"], np.arange(5))
    assert len(calls) == 2


def test_default_folder_follows_xdg(tmp_path, monkeypatch):
    monkeypatch.delenv(diskcache.ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert diskcache.cache_dir() == tmp_path / "reface"
