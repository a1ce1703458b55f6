"""`remodel` end to end on phantom heads (CPU): the brain is bit-exact, seeds are reproducible and diverse,
and a bad checkpoint is a clean user error (exit 2 from `reface run`)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from reface.deidentify import deidentify, to_working
from reface.errors import RefaceError
from reface.io import load_scan
from reface.masks import head_mask, make_regions
from reface.methods.remodel import remodel
from reface.model.checkpoint import save_generator
from reface.model.config import ModelConfig
from reface.model.networks import Generator
from reface.phantom import phantom_image
from reface.resources import default_model_path

TINY = ModelConfig(scales_mm=(8, 4, 2), g_widths=(4, 4, 4), d_widths=(4, 4, 4), latent_dim=4)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """An untrained but complete checkpoint: exercises the whole path in seconds."""
    torch.manual_seed(0)
    generator = Generator(TINY)
    with torch.no_grad():  # make the finer stages non-trivial (they start as the identity)
        for stage in generator.stages[1:]:
            stage.out.weight.normal_(0, 0.05)
    return save_generator(generator, tmp_path_factory.mktemp("model") / "tiny.safetensors", data="test")


def _scan(tmp_path, **kwargs):
    img, brain = phantom_image(**kwargs)
    path = tmp_path / "head.nii.gz"
    nib.save(img, path)
    return load_scan(path), brain


@pytest.fixture(scope="module")
def working(tmp_path_factory):
    """A phantom on the working grid with its regions (shared by the seed tests)."""
    scan, brain = _scan(tmp_path_factory.mktemp("ph"), shape=(48, 56, 52), zooms=(4.0, 4.0, 4.0))
    regions = make_regions(scan, brain=brain)
    return to_working(scan, regions)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"shape": (48, 56, 52), "zooms": (4.0, 4.0, 4.0), "axcodes": "RAS", "slope": 0.5},
        {
            "shape": (56, 52, 60),
            "zooms": (3.5, 4.0, 3.5),
            "axcodes": "LPS",
            "oblique_deg": 12.0,
            "dtype": np.float32,
        },
        pytest.param(
            {"shape": (60, 64, 56), "zooms": (3.0, 3.5, 4.0), "axcodes": "PIR", "oblique_deg": -8.0},
            marks=pytest.mark.slow,
        ),
    ],
)
def test_brain_is_bit_exact_after_remodel(tmp_path, tiny_model, kwargs):
    scan, brain = _scan(tmp_path, **kwargs)
    result = deidentify(scan, "remodel", seed=3, brain=brain, model=str(tiny_model))
    preserved = result.regions.preserved
    assert np.array_equal(result.raw[preserved], scan.raw[preserved])
    outside = result.regions.head & ~preserved
    changed = result.raw[outside] != scan.raw[outside]
    assert changed.mean() > 0.5, "remodel must replace the head outside the preserved region"


def test_same_seed_same_head_other_seed_other_head(working, tiny_model):
    volume, regions = working
    a = remodel(volume, regions, rng=np.random.default_rng(7), model=tiny_model)
    b = remodel(volume, regions, rng=np.random.default_rng(7), model=tiny_model)
    c = remodel(volume, regions, rng=np.random.default_rng(8), model=tiny_model)
    assert a.shape == volume.shape and a.dtype == np.float32 and np.isfinite(a).all()
    assert np.array_equal(a, b)
    outside = regions.head & ~regions.preserved
    assert np.abs(a[outside] - c[outside]).mean() > 1e-3 * volume[regions.brain].mean()


@pytest.mark.skipif(not default_model_path().exists(), reason="no shipped default model in this checkout")
def test_default_model_makes_a_head_and_its_noise_matters(working):
    """The shipped model: a head (not an empty box) around the brain, and seeds change the generator's
    output itself, not only the added texture. Its diversity is small (see MODEL_CARD.md)."""
    from reface.model.checkpoint import load_generator
    from reface.model.data import intensity_scale, pyramid
    from reface.model.networks import sample_latents
    from reface.model.prior import fitted_prior, match_contrast

    volume, regions = working
    out = remodel(volume, regions, rng=np.random.default_rng(0))
    outside = regions.head & ~regions.preserved
    smooth = ndi.gaussian_filter(out, 2.0)
    far = ~ndi.binary_dilation(regions.head, iterations=10)
    assert smooth[outside].mean() > 3 * max(float(smooth[far].mean()), 1e-6)

    generator, _ = load_generator(default_model_path())
    cfg = generator.cfg
    norm = volume / intensity_scale(volume, regions.brain)
    prior = match_contrast(fitted_prior(norm, regions.brain, regions.grid), norm, regions.preserved)
    levels = pyramid(norm, regions.preserved, cfg.scales_mm, prior)
    conds, masks, priors = (
        [torch.from_numpy(levels[s][name])[None, None] for s in cfg.scales_mm] for name in ("cond", "mask", "prior")
    )
    heads = []
    for seed in (0, 1):
        z, noises = sample_latents(
            cfg, 1, [tuple(c.shape[2:]) for c in conds], torch.Generator().manual_seed(seed)
        )
        with torch.no_grad():
            heads.append(generator(conds, masks, noises, z, priors)[-1][0, 0].numpy())
    generated = levels[cfg.scales_mm[-1]]["mask"] < 1
    assert np.abs(heads[0] - heads[1])[generated].mean() > 5e-4  # normalised units (brain p99 = 1)


def test_corrupt_model_is_a_reface_error(working, tmp_path):
    volume, regions = working
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"definitely not safetensors")
    with pytest.raises(RefaceError):
        remodel(volume, regions, rng=np.random.default_rng(0), model=bad)


def test_reface_run_with_bad_model_exits_2(tmp_path, capsys):
    from reface.cli import main

    img, brain = phantom_image(shape=(48, 56, 52), zooms=(4.0, 4.0, 4.0))
    nib.save(img, tmp_path / "in.nii.gz")
    nib.save(nib.Nifti1Image(brain.astype(np.uint8), img.affine), tmp_path / "brain.nii.gz")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
    code = main(
        [
            "run",
            str(tmp_path / "in.nii.gz"),
            "-o",
            str(tmp_path / "out.nii.gz"),
            "--method",
            "remodel",
            "--model",
            str(bad),
            "--brain-mask",
            str(tmp_path / "brain.nii.gz"),
            "--quiet",
        ]
    )
    assert code == 2
    assert "bad.safetensors" in capsys.readouterr().err
    assert not (tmp_path / "out.nii.gz").exists()


def test_face_deformation_is_seeded_smooth_and_leaves_the_brain_alone(working):
    """The inference-time shape deformation: same seed same field, another seed another field, no folding
    (det J checked here independently, by central differences on the coarse grid), a few mm to a few cm
    of displacement on the face, and the warp is the identity on and near the preserved region."""
    from reface.model.data import intensity_scale
    from reface.model.inference import SHAPE_MIN_JACOBIAN, SHAPE_SPACING_MM, face_deformation, warp

    volume, regions = working
    step = SHAPE_SPACING_MM
    coarse = (volume / intensity_scale(volume, regions.brain))[::step, ::step, ::step]
    a = face_deformation(regions.preserved, coarse, np.random.default_rng(5))
    b = face_deformation(regions.preserved, coarse, np.random.default_rng(5))
    c = face_deformation(regions.preserved, coarse, np.random.default_rng(6))
    assert a.dtype == np.float32 and a.shape[0] == 3 and np.isfinite(a).all()
    assert np.array_equal(a, b)
    assert np.abs(a - c).max() > 2.0  # mm

    length = np.linalg.norm(a, axis=0)
    assert 3.0 < float(length.max()) < 40.0, float(length.max())
    grads = np.stack([np.stack(np.gradient(a[i], float(step)), axis=0) for i in range(3)])  # [3, 3, x, y, z]
    jac = np.moveaxis(grads + np.eye(3)[:, :, None, None, None], (0, 1), (-2, -1))
    assert float(np.linalg.det(jac).min()) > SHAPE_MIN_JACOBIAN

    head = torch.from_numpy(volume)[None, None]
    warped = warp(head, a)[0, 0].numpy()
    near = ndi.binary_dilation(regions.preserved, iterations=2)
    assert np.allclose(warped[near], volume[near], rtol=0, atol=1e-4 * float(volume.max()))
    outside = regions.head & ~near
    assert np.abs(warped - volume)[outside].mean() > 1e-3 * float(volume[regions.brain].mean())


def test_larger_variation_adds_broad_deformation_without_folding_or_touching_the_brain(working):
    """remodel's `variation` > 1 adds broad low-frequency pieces on top of the local ones: more and wider
    displacement, still folding-free and zero on and near the preserved region; <= 1 is unchanged."""
    from reface.model.data import intensity_scale
    from reface.model.inference import SHAPE_MIN_JACOBIAN, SHAPE_SPACING_MM, face_deformation, warp

    volume, regions = working
    step = SHAPE_SPACING_MM
    coarse = (volume / intensity_scale(volume, regions.brain))[::step, ::step, ::step]
    base = face_deformation(regions.preserved, coarse, np.random.default_rng(5))
    same = face_deformation(regions.preserved, coarse, np.random.default_rng(5), amount=1.0)
    big = face_deformation(regions.preserved, coarse, np.random.default_rng(5), amount=3.0)
    assert np.array_equal(base, same)
    moved = lambda d: float(np.percentile(np.linalg.norm(d, axis=0), 99))  # noqa: E731
    assert moved(big) > 1.3 * moved(base), (moved(big), moved(base))
    grads = np.stack([np.stack(np.gradient(big[i], float(step)), axis=0) for i in range(3)])
    jac = np.moveaxis(grads + np.eye(3)[:, :, None, None, None], (0, 1), (-2, -1))
    assert float(np.linalg.det(jac).min()) > SHAPE_MIN_JACOBIAN
    warped = warp(torch.from_numpy(volume)[None, None], big)[0, 0].numpy()
    near = ndi.binary_dilation(regions.preserved, iterations=2)
    assert np.allclose(warped[near], volume[near], rtol=0, atol=1e-4 * float(volume.max()))


@pytest.mark.skipif(not default_model_path().exists(), reason="no shipped default model in this checkout")
def test_default_model_seeds_give_differently_shaped_heads(working):
    """With the shipped model, two seeds' head masks outside the preserved region differ in several times
    more voxels with the shape deformation than without it (the generator alone makes nearly one face)."""
    from reface.model.checkpoint import load_generator
    from reface.model.data import intensity_scale
    from reface.model.inference import generate_head
    from reface.model.prior import fitted_prior, match_contrast

    volume, regions = working
    generator, _ = load_generator(default_model_path())
    scale = intensity_scale(volume, regions.brain)
    level = 0.15 * scale
    prior = match_contrast(fitted_prior(volume / scale, regions.brain, regions.grid), volume / scale,
                           regions.preserved)
    outside = ~regions.preserved
    changed = {}
    for diversity in (0.0, 1.0):
        masks = []
        for seed in (0, 1):
            out = generate_head(generator, volume, regions.preserved, regions.brain, regions.grid, prior=prior,
                                rng=torch.Generator().manual_seed(seed), shape_diversity=diversity)
            masks.append(ndi.gaussian_filter(out, 1.5) > level)
        changed[diversity] = int((masks[0] ^ masks[1])[outside].sum())
    assert changed[1.0] > 20_000, changed
    assert changed[1.0] > 3 * changed[0.0], changed


@pytest.mark.parametrize("noise", [0.0, 10.0])
def test_remodel_background_is_the_inputs(tmp_path, noise):
    """Realism invariants, end to end with the shipped model: a zero background stays exactly zero, and no
    voxel outside the new head gains signal beyond the input's own noise level."""
    scan, brain = _scan(tmp_path, shape=(48, 56, 52), zooms=(4.0, 4.0, 4.0), noise=noise)
    out = deidentify(scan, "remodel", seed=0, brain=brain).data
    before = scan.data
    regions = make_regions(scan, brain=brain)
    near = ndi.binary_dilation(regions.head | head_mask(out), iterations=3)  # both heads, grown by 12 mm
    far = ~near
    assert far.sum() > 0.2 * far.size
    if noise == 0:
        assert np.all(before[far] == 0)
        # every non-zero voxel is the head itself (one piece with the brain): no speckle in the air
        labels, _ = ndi.label(out != 0)
        head_label = np.bincount(labels[regions.brain]).argmax()
        assert head_label > 0 and np.all((labels == head_label) | (labels == 0))
        assert np.mean(out[far] != 0) < 0.002  # and the head barely reaches 12 mm past both head masks
    else:
        ceiling = np.percentile(before[far], 99.9)
        assert np.mean(out[far] > ceiling) < 0.005
        assert abs(np.std(out[far]) - np.std(before[far])) < 0.2 * np.std(before[far])
