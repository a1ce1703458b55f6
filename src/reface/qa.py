"""Before/after QA picture: head-surface renderings (front, side) and three orthogonal slices.

The slices outline the preserved region, so a reviewer sees at a glance what was kept and what changed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import geometry
from .errors import RefaceError


def _ras_slices(data: np.ndarray, affine: np.ndarray, mask: np.ndarray, spacing: float = 1.5):
    """Axial, coronal, sagittal mid-slices in RAS display orientation, plus the mask's slices."""
    centre = affine[:3, :3] @ (np.array(mask.shape) / 2.0) + affine[:3, 3]
    if mask.any():
        from scipy import ndimage as ndi

        ijk = np.array(ndi.center_of_mass(mask))
        centre = affine[:3, :3] @ ijk + affine[:3, 3]
    grid = geometry.working_grid(centre, shape=(160, 180, 180), spacing=spacing)
    vol = geometry.resample(data, affine, grid)
    msk = geometry.resample_mask(mask, affine, grid)
    cx, cy, cz = (np.array(grid.shape) // 2).tolist()
    views = [
        (vol[:, :, cz].T[::-1, ::-1], msk[:, :, cz].T[::-1, ::-1]),  # axial, radiological: R on the left
        (vol[:, cy, :].T[::-1, ::-1], msk[:, cy, :].T[::-1, ::-1]),  # coronal
        (vol[cx, :, :].T[::-1, :], msk[cx, :, :].T[::-1, :]),  # sagittal, anterior on the right
    ]
    return views


def qa_figure(before: np.ndarray, after: np.ndarray, affine: np.ndarray, preserved: np.ndarray, title: str = "",
              warnings: list[str] | tuple[str, ...] = ()):
    """A matplotlib figure: rows = before / after, columns = front, side renderings + 3 slices."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    try:
        from .evaluate.render import render_head
    except ImportError:  # renderer not installed in this build: slices only
        render_head = None
    ncols = 5 if render_head is not None else 3
    fig, axes = plt.subplots(2, ncols, figsize=(3 * ncols, 6.4), dpi=100)
    vmax = float(np.percentile(before[before > 0], 99.5)) if np.any(before > 0) else 1.0
    for row, (label, vol) in enumerate((("input", before), ("output", after))):
        col = 0
        if render_head is not None:
            for view in ("front", "right"):
                axes[row, col].imshow(render_head(vol, affine, view=view, size=256))
                axes[row, col].set_title(f"{label}: {view}", fontsize=9)
                col += 1
        for name, (img, msk) in zip(("axial", "coronal", "sagittal"), _ras_slices(vol, affine, preserved),
                                    strict=True):
            ax = axes[row, col]
            ax.imshow(img, cmap="gray", vmin=0, vmax=vmax)
            ax.contour(msk.astype(float), levels=[0.5], colors=["#ffb000"], linewidths=0.6)
            ax.set_title(f"{label}: {name}", fontsize=9)
            col += 1
    for ax in axes.ravel():
        ax.axis("off")
    if title:
        fig.suptitle(title + "   (orange: preserved region, bit-identical)", fontsize=10)
    fig.tight_layout()
    if warnings:  # below the panels, in red: a cut-off brain must be seen by whoever checks the pictures
        fig.subplots_adjust(bottom=0.04 + 0.035 * len(warnings))
        text = "\n".join(f"warning: {w}" for w in warnings)
        fig.text(0.01, 0.01, text, color="#b00000", fontsize=8, ha="left", va="bottom", wrap=True)
    return fig


def save_qa(result, path: str | Path, *, force: bool = False) -> Path:
    """Write the QA PNG for a deidentify Result (atomically, like every output)."""
    import os
    import tempfile

    from .io import publish

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise RefaceError(f"QA picture must be a .png file: {path}")
    if path.exists() and not force:
        raise RefaceError(f"output exists: {path} (use --force to overwrite)")
    scan = result.scan
    fig = qa_figure(scan.data, result.data, scan.affine, result.regions.preserved,
                    title=f"reface {result.method} (seed {result.seed}): {Path(scan.source).name}",
                    warnings=getattr(result, "warnings", ()))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp)
        publish(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
        import matplotlib.pyplot as plt

        plt.close(fig)
    return path
