"""The promise: every method, every orientation and voxel size, the preserved brain is bit-identical."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from reface.deidentify import deidentify, deidentify_file
from reface.errors import RefaceError
from reface.io import load_scan
from reface.masks import check_brain, grow, make_regions
from reface.methods import METHODS, get_method
from reface.phantom import phantom_image

ORIENTATIONS = [("RAS", 0.0), ("LAS", 0.0), ("LPI", 0.0), ("RAS", 12.0)]
FACE_METHODS = [m for m in METHODS if m != "none"]


def _scan(tmp_path, **kwargs):
    img, brain = phantom_image(**kwargs)
    path = tmp_path / "head.nii.gz"
    nib.save(img, path)
    return load_scan(path), brain


def _available(method: str) -> bool:
    try:
        get_method(method)
    except ImportError:
        return False
    return True


@pytest.mark.parametrize("axcodes, oblique", ORIENTATIONS, ids=["RAS", "LAS", "LPI", "oblique"])
@pytest.mark.parametrize("method", list(METHODS))
def test_brain_bit_exact_every_method_and_orientation(tmp_path, method, axcodes, oblique):
    if not _available(method):
        pytest.fail(f"method {method} is registered but cannot be imported")
    scan, brain = _scan(tmp_path, shape=(84, 100, 96), zooms=(2.2, 2.2, 2.2), axcodes=axcodes,
                        oblique_deg=oblique)
    result = deidentify(scan, method, seed=1, brain=brain)
    preserved = result.regions.preserved
    assert preserved[brain].all()
    np.testing.assert_array_equal(result.raw[preserved], scan.raw[preserved])
    assert result.raw.dtype == scan.raw.dtype and result.raw.shape == scan.raw.shape
    changed = result.raw != scan.raw
    if method == "none":
        assert not changed.any()
    else:
        assert changed[~preserved].sum() > 50, f"{method} changed almost nothing outside the brain"
        assert not changed[preserved].any()


@pytest.mark.parametrize("zooms, shape", [((1.0, 1.0, 1.0), (160, 200, 212)), ((0.8, 0.8, 1.2), (200, 250, 176))],
                         ids=["1mm", "0.8x0.8x1.2"])
def test_brain_bit_exact_at_native_voxel_sizes(tmp_path, zooms, shape):
    scan, brain = _scan(tmp_path, shape=shape, zooms=zooms, axcodes="LAS")
    result = deidentify(scan, "shear", seed=0, brain=brain)
    np.testing.assert_array_equal(result.raw[result.regions.preserved], scan.raw[result.regions.preserved])
    assert (result.raw != scan.raw).sum() > 1000


def test_scaled_int16_input_preserved_on_disk(tmp_path):
    img, brain = phantom_image(shape=(84, 100, 96), zooms=(2.2, 2.2, 2.2))
    raw = np.asarray(img.dataobj).astype(np.int16)
    scaled = nib.Nifti1Image(raw, img.affine)
    scaled.header.set_slope_inter(0.5, 3.0)
    path = tmp_path / "scaled.nii"
    scaled.to_filename(path)
    mask_path = tmp_path / "mask.nii.gz"
    nib.save(nib.Nifti1Image(brain.astype(np.uint8), img.affine), mask_path)
    out = tmp_path / "out.nii"
    result = deidentify_file(path, out, "shear", brain_mask=mask_path, save_mask=tmp_path / "kept.nii.gz")
    written = nib.load(out)
    source = nib.load(path)
    assert (written.dataobj.slope, written.dataobj.inter) == (source.dataobj.slope, source.dataobj.inter)
    kept = np.asarray(nib.load(tmp_path / "kept.nii.gz").dataobj) > 0
    np.testing.assert_array_equal(kept, result.regions.preserved)
    w, s = np.asarray(written.dataobj.get_unscaled()), np.asarray(source.dataobj.get_unscaled())
    np.testing.assert_array_equal(w[kept], s[kept])
    assert (w != s).any()


def test_same_seed_same_output(tmp_path):
    scan, brain = _scan(tmp_path, shape=(84, 100, 96), zooms=(2.2, 2.2, 2.2))
    a = deidentify(scan, "blur", seed=3, brain=brain).raw
    b = deidentify(scan, "blur", seed=3, brain=brain).raw
    np.testing.assert_array_equal(a, b)


def test_margin_grows_preserved_region_in_mm(tmp_path):
    scan, brain = _scan(tmp_path, shape=(84, 100, 96), zooms=(2.2, 2.2, 2.2))
    small = make_regions(scan, brain=brain, margin_mm=0.0).preserved
    large = make_regions(scan, brain=brain, margin_mm=6.0).preserved
    assert (small == brain).all()
    assert large[brain].all() and large.sum() > small.sum()
    # 6 mm at 2.2 mm voxels reaches 2 voxels out along an axis but not 3
    line = np.zeros((1, 1, 20), bool)
    line[0, 0, 10] = True
    grown = grow(line, 6.0, (2.2, 2.2, 2.2))[0, 0]
    assert grown[8] and grown[12] and not grown[7] and not grown[13]


def _cut(brain: np.ndarray, axis: int, low: bool, depth: int = 12) -> np.ndarray:
    """The mask as if the field of view started (low) or ended `depth` slices inside the brain."""
    moved = np.moveaxis(brain, axis, 0)
    idx = np.argwhere(moved.any(axis=(1, 2)))[:, 0]
    out = np.zeros_like(moved)
    if low:
        first = int(idx.min()) + depth
        out[: moved.shape[0] - first] = moved[first:]
    else:
        shift = moved.shape[0] - 1 - (int(idx.max()) - depth)
        out[shift:] = moved[: moved.shape[0] - shift]
    return np.moveaxis(out, 0, axis)


def test_implausible_masks_are_refused_with_a_way_out(tmp_path):
    scan, brain = _scan(tmp_path, shape=(84, 100, 96), zooms=(2.2, 2.2, 2.2))
    with pytest.raises(RefaceError, match="no plausible brain.*--brain-mask"):
        check_brain(np.zeros_like(brain), scan)
    with pytest.raises(RefaceError, match="the given brain mask holds 0 ml"):
        check_brain(np.zeros_like(brain), scan, given=True)
    pieces = np.zeros_like(brain)  # two blobs of a plausible total volume: not one brain
    pieces[5:30, 5:40, 5:40] = True
    pieces[50:80, 60:95, 55:90] = True
    with pytest.raises(RefaceError, match="not one brain"):
        check_brain(pieces, scan)
    block = np.zeros_like(brain)  # a phantom cube: a block fills its bounding box
    block[20:70, 20:70, 20:70] = True
    with pytest.raises(RefaceError, match="brain's shape"):
        check_brain(block, scan)
    assert check_brain(brain, scan) == []


@pytest.mark.parametrize("axcodes", ["RAS", "LPI"])
def test_field_of_view_rule_follows_anatomy(tmp_path, axcodes):
    """The brainstem may leave through the inferior face; any other cut face is processed with a warning."""
    scan, brain = _scan(tmp_path, shape=(84, 100, 96), zooms=(2.2, 2.2, 2.2), axcodes=axcodes)
    inferior_low = axcodes[2] == "S"  # k = 0 is inferior in RAS, superior in LPI
    assert check_brain(_cut(brain, 2, low=inferior_low), scan) == []
    (vertex,) = check_brain(_cut(brain, 2, low=not inferior_low), scan)
    assert "superior face" in vertex and "processed what is inside" in vertex
    anterior_low = axcodes[1] == "P"  # j = 0 is anterior when j runs towards posterior
    (front,) = check_brain(_cut(brain, 1, low=anterior_low), scan)
    assert "anterior face" in front
    (side,) = check_brain(_cut(brain, 0, low=True), scan)
    assert ("left" if axcodes[0] == "L" else "right") in side  # i = 0 is the side i runs away from


def test_tilted_inferior_face_still_counts_as_inferior(tmp_path):
    scan, brain = _scan(tmp_path, shape=(84, 100, 96), zooms=(2.2, 2.2, 2.2), oblique_deg=25.0)
    assert check_brain(_cut(brain, 2, low=True), scan) == []


def test_vertex_cut_scan_is_processed_with_a_warning(tmp_path, capsys):
    from reface.cli import main as cli_main

    scan, brain = _scan(tmp_path, shape=(84, 100, 96), zooms=(2.2, 2.2, 2.2))
    k_top = int(np.argwhere(brain.any(axis=(0, 1))).max())
    img = nib.load(tmp_path / "head.nii.gz")
    cut = tmp_path / "cut.nii.gz"  # the field of view ends 10 slices below the top of the brain
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[:, :, : k_top - 9], img.affine, img.header), cut)
    mask = tmp_path / "mask.nii.gz"
    nib.save(nib.Nifti1Image(brain[:, :, : k_top - 9].astype(np.uint8), img.affine), mask)
    result = deidentify_file(cut, tmp_path / "out.nii.gz", "deface", brain_mask=mask, qa=tmp_path / "qa.png")
    assert len(result.warnings) == 1 and "superior face" in result.warnings[0]
    out = np.asarray(nib.load(tmp_path / "out.nii.gz").dataobj)
    assert (out[result.regions.brain] == np.asarray(nib.load(cut).dataobj)[result.regions.brain]).all()
    assert (tmp_path / "qa.png").stat().st_size > 0
    code = cli_main(["run", str(cut), "-o", str(tmp_path / "out2.nii.gz"), "--method", "deface",
                     "--brain-mask", str(mask), "--quiet"])
    err = capsys.readouterr().err
    assert code == 0 and "warning" in err and "superior face" in err


@pytest.mark.parametrize("offset", [-200, 300])
def test_air_that_is_not_zero_stays_at_its_level(tmp_path, offset):
    """An int16 file with its air at -200 (or +300): the cut-away face becomes the input's air, not 0."""
    img, brain = phantom_image(shape=(48, 56, 52), zooms=(4.0, 4.0, 4.0))
    raw = np.asarray(img.dataobj).astype(np.int16) + np.int16(offset)
    path = tmp_path / "shifted.nii.gz"
    nib.save(nib.Nifti1Image(raw, img.affine), path)
    scan = load_scan(path)
    result = deidentify(scan, "shear", brain=brain)
    changed = result.raw != scan.raw
    assert changed.any()
    air = float(np.median(raw[:3]))
    assert abs(float(np.median(result.raw[changed])) - air) < 20
    assert (result.raw[changed] == 0).mean() < 0.01  # (interpolated edges may cross 0)
