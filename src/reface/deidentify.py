"""The one wrapper every method goes through: regions, working grid, method, compositing, checks.

Voxels a method did not change keep their raw input values; voxels it changed are resampled back from
the working grid; the preserved region is copied from the input and asserted bit-identical.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage as ndi

from . import geometry
from .errors import RefaceError
from .formats import output_kind, resolve_output
from .headcheck import check_head
from .io import Scan, load_mask, load_scan, save_mask_like, save_scan_like
from .masks import DEFAULT_MARGIN_MM, Regions, make_regions
from .methods import DEFAULT_METHOD, WorkRegions, get_method

if TYPE_CHECKING:
    from .air import InputAir

Progress = Callable[[str], None]


@dataclass
class Result:
    """A de-identified scan on the input grid, with what produced it."""

    scan: Scan
    raw: np.ndarray  # output raw values, input dtype and shape
    regions: Regions  # on the input grid
    method: str
    seed: int
    warnings: list[str] = field(default_factory=list)  # processed, but the user should know (cut-off brain, ...)
    output: Path | None = None  # where deidentify_file wrote it (a MINC/PAR/ANALYZE name becomes .nii.gz)

    @property
    def data(self) -> np.ndarray:
        return (self.raw.astype(np.float64) * self.scan.slope + self.scan.inter).astype(np.float32)


def background_level(scan: Scan, regions: Regions) -> float:
    """The input's air level: 0 for most scans; -200 for an int16 file whose air sits at -200, say.

    Methods fill air with 0 and find the head by thresholds, so they work on the scan minus this level
    and their output gets it back: the new air matches the input's. Levels within 2 % of the head's
    99th percentile (the noise floor of an ordinary magnitude image) count as 0, which keeps outputs
    unchanged for scans whose air is already near zero."""
    data = scan.data
    outside = ~regions.head
    if not outside.any():
        return 0.0
    level = float(np.median(data[outside]))
    scale = float(np.percentile(data[regions.head], 99)) - level
    return level if scale > 0 and abs(level) > 0.02 * scale else 0.0


def to_working(scan: Scan, regions: Regions, level: float = 0.0) -> tuple[np.ndarray, WorkRegions]:
    """Resample the scan, minus its air level, and its regions into the 1 mm RAS working grid."""
    grid = geometry.grid_for_brain(regions.brain, scan.affine, head=regions.head, preserved=regions.preserved)
    volume = geometry.resample(scan.data - np.float32(level), scan.affine, grid, order=1)
    work = WorkRegions(
        brain=geometry.resample_mask(regions.brain, scan.affine, grid),
        preserved=geometry.resample_mask(regions.preserved, scan.affine, grid, threshold=0.01),
        head=geometry.resample_mask(regions.head, scan.affine, grid),
        grid=grid,
        inside=geometry.inside_field_of_view(scan.shape, scan.affine, grid),
    )
    return volume, work


def composite(scan: Scan, regions: Regions, volume_w: np.ndarray, out_w: np.ndarray,
              grid: geometry.Grid) -> np.ndarray:
    """Raw output on the input grid: changed voxels from the method, all else from the input."""
    changed_w = np.abs(out_w - volume_w) > 1e-6 * max(1.0, float(np.abs(volume_w).max()))
    changed_w = ndi.binary_dilation(changed_w, iterations=1)
    if not changed_w.any():
        return scan.raw.copy()
    inverse = geometry.Grid(scan.shape, scan.affine)
    changed = geometry.resample(changed_w.astype(np.float32), grid.affine, inverse, order=1) > 0
    generated = geometry.resample(out_w, grid.affine, inverse, order=1)
    write = changed & ~regions.preserved
    raw = scan.raw.copy()
    raw[write] = scan.quantize(generated[write])
    return raw


def assert_preserved(scan: Scan, raw: np.ndarray, preserved: np.ndarray) -> None:
    """The promise: every preserved voxel equals the input's raw value. Checked, never assumed."""
    if raw.shape != scan.raw.shape or raw.dtype != scan.raw.dtype:
        raise AssertionError("output grid or dtype differs from the input")
    same = raw[preserved] == scan.raw[preserved]
    if not np.all(same):
        raise AssertionError(f"{int((~same).sum())} preserved voxels differ from the input")


def deidentify(scan: Scan, method: str = DEFAULT_METHOD, *, seed: int = 0, brain: np.ndarray | None = None,
               margin_mm: float = DEFAULT_MARGIN_MM, device: str = "cpu", progress: Progress | None = None,
               **options) -> Result:
    """De-identify one scan in memory with a named method."""
    say = progress or (lambda _msg: None)
    fn = get_method(method)
    on_input_grid = getattr(fn, "on_input_grid", None)
    input_grid = on_input_grid is not None and not options
    say("brain mask")
    # on the input grid the head only checks the scan and finds its air level: a 2 mm head will do
    step = 2 if input_grid and max(scan.zooms) <= 1.05 else 1
    regions = make_regions(scan, brain=brain, margin_mm=margin_mm, device=device, head_step=step)
    check_head(regions.brain, regions.head, scan.zooms, scan.source, given=brain is not None)
    level = background_level(scan, regions)
    rng = np.random.default_rng(seed)
    deep_mm = float(options.pop("deep_mm", getattr(fn, "deep_mm", 0.0)))
    layers = bool(options.pop("layered_scalp", getattr(fn, "layered_scalp", False)))
    near_mm = float(options.pop("near_brain_mm", getattr(fn, "near_brain_mm", 0.0)))
    tissue = bool(options.pop("match_tissue", getattr(fn, "match_tissue", False)))
    if input_grid:
        # a method that can work on the scan's own grid (shear) skips the resampling there and back
        say(f"method {method} (input grid)")
        raw = on_input_grid(scan, regions, rng=rng, level=level)
        raw[regions.preserved] = scan.raw[regions.preserved]
        assert_preserved(scan, raw, regions.preserved)
        return Result(scan=scan, raw=raw, regions=regions, method=method, seed=seed,
                      warnings=list(regions.warnings))
    say("working grid")
    volume_w, regions_w = to_working(scan, regions, level)
    say(f"method {method}")
    if method == "remodel":
        options.setdefault("device", device)
    air = bool(getattr(fn, "generates_air", False))
    with ThreadPoolExecutor(max_workers=1) as pool:
        # what the finishing steps read of the input alone is found on the other core while the method runs
        # (remodel's brain registration holds one core and releases the GIL)
        later = pool.submit(input_maps, scan, regions, depths=deep_mm > 0 or layers or tissue,
                            near=layers or near_mm > 0, air=air) if deep_mm > 0 or layers or air or tissue else None
        out_w = np.asarray(fn(volume_w, regions_w, rng=rng, **options), dtype=np.float32)
        maps = later.result() if later is not None else None
    if out_w.shape != volume_w.shape or not np.all(np.isfinite(out_w)):
        raise AssertionError(f"method {method} returned a bad volume ({out_w.shape})")
    say("compositing")
    out_w = np.where(regions_w.preserved, volume_w, out_w)
    if level:
        volume_w, out_w = volume_w + np.float32(level), out_w + np.float32(level)
    raw = composite(scan, regions, volume_w, out_w, regions_w.grid)
    if method != "none":
        # head tissue in front of the working grid (a long nose, say) is never seen by the method: blank it
        beyond = regions.head & ~regions.preserved & geometry.outside_front(scan.shape, scan.affine, regions_w.grid)
        if beyond.any():
            say(f"blanked {int(beyond.sum())} head voxels in front of the working grid")
            raw[beyond] = scan.quantize(np.full(1, level, np.float32))[0]
    new_head = None
    if deep_mm > 0 or layers:
        say(f"the input's own tissue deeper than {deep_mm:g} mm" + (", its scalp layering" if layers else ""))
        raw, new_head = keep_deep(scan, regions, raw, level, deep_mm, layers=layers, near_mm=near_mm, maps=maps)
    if tissue:
        say("the generated tissue's contrast")
        raw, new_head = match_tissue(scan, regions, raw, level, new_head=new_head, maps=maps)
    if air:
        say("air on the input grid")
        raw = fresh_air(scan, regions, raw, level, np.random.default_rng([seed, 1]), new_head=new_head,
                        maps=maps)
    raw[regions.preserved] = scan.raw[regions.preserved]
    assert_preserved(scan, raw, regions.preserved)
    return Result(scan=scan, raw=raw, regions=regions, method=method, seed=seed, warnings=list(regions.warnings))


def _new_head(scan: Scan, regions: Regions, new: np.ndarray, level: float) -> np.ndarray:
    from .masks import head_mask

    return head_mask(new - np.float32(level)) | regions.preserved


@dataclass(frozen=True)
class InputMaps:
    """What keep_deep and fresh_air read of the input alone (none of it depends on the method's output)."""

    input_depth: np.ndarray | None = None  # deep_tissue.depth_mm of the input's head
    brain_dist: np.ndarray | None = None  # ... of everything outside the preserved region
    air: InputAir | None = None


def input_maps(scan: Scan, regions: Regions, *, depths: bool, near: bool, air: bool) -> InputMaps:
    from .air import input_air
    from .deep_tissue import depth_mm

    input_head = regions.head | regions.preserved
    return InputMaps(
        input_depth=depth_mm(input_head, scan.zooms) if depths else None,
        brain_dist=depth_mm(~regions.preserved, scan.zooms) if near else None,
        air=input_air(scan.data, regions.head, scan.zooms) if air else None,
    )


def keep_deep(scan: Scan, regions: Regions, raw: np.ndarray, level: float, depth: float, *,
              layers: bool = False, near_mm: float = 0.0, maps: InputMaps | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """(raw output with the input's own tissue back deeper than `depth` mm under both skins, the new head).

    `layers`: first give the generated scalp the input's layering (scalp.py); `depth` 0 keeps no deep tissue.
    `near_mm`: within this distance of the preserved region the kept tissue starts shallower (deep_tissue).
    `maps`: `input_maps(...)` when the caller found them already."""
    from .deep_tissue import depth_mm, keep_deep_tissue
    from .scalp import layered_scalp

    new = (raw.astype(np.float64) * scan.slope + scan.inter).astype(np.float32)
    new_head = _new_head(scan, regions, new, level)
    input_head = regions.head | regions.preserved
    maps = maps or InputMaps()
    input_depth = depth_mm(input_head, scan.zooms) if maps.input_depth is None else maps.input_depth
    new_depth = depth_mm(new_head, scan.zooms)
    brain_dist = None
    if layers or near_mm > 0:
        brain_dist = depth_mm(~regions.preserved, scan.zooms) if maps.brain_dist is None else maps.brain_dist
    changed = np.zeros(new.shape, bool)
    if layers:
        new, changed = layered_scalp(scan.data, new, input_head, new_head, regions.preserved, scan.zooms,
                                     input_depth=input_depth, new_depth=new_depth, brain_dist=brain_dist)
    if depth > 0:
        new, deep = keep_deep_tissue(scan.data, new, input_head, new_head, scan.zooms, depth=depth,
                                     input_depth=input_depth, new_depth=new_depth, brain_dist=brain_dist,
                                     near_mm=near_mm)
        changed |= deep
    out = raw.copy()
    out[changed] = scan.quantize(new[changed])
    return out, new_head


def match_tissue(scan: Scan, regions: Regions, raw: np.ndarray, level: float, *,
                 new_head: np.ndarray | None = None, maps: InputMaps | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(raw output whose generated tissue has the replaced tissue's intensity distribution, the new head).

    On the input's own grid and last, after every step that blends or resamples (intensity.match_replaced)."""
    from .deep_tissue import depth_mm
    from .intensity import match_replaced

    new = (raw.astype(np.float64) * scan.slope + scan.inter).astype(np.float32)
    if new_head is None:
        new_head = _new_head(scan, regions, new, level)
    input_head = regions.head | regions.preserved
    maps = maps or InputMaps()
    input_depth = depth_mm(input_head, scan.zooms) if maps.input_depth is None else maps.input_depth
    mapped, changed = match_replaced(scan.data, new, input_head, new_head, regions.preserved, input_depth,
                                     depth_mm(new_head, scan.zooms))
    out = raw.copy()
    out[changed] = scan.quantize(mapped[changed])
    return out, new_head


def fresh_air(scan: Scan, regions: Regions, raw: np.ndarray, level: float, rng: np.random.Generator, *,
              new_head: np.ndarray | None = None, maps: InputMaps | None = None) -> np.ndarray:
    """Raw output whose generated air is drawn again, on the input's own grid, from the input's air.

    `new_head`: the output's head mask when the caller has it already (keep_deep); `maps`: input_maps'."""
    from .air import refresh_air

    new = (raw.astype(np.float64) * scan.slope + scan.inter).astype(np.float32)
    if new_head is None:
        new_head = _new_head(scan, regions, new, level)
    fresh = refresh_air(scan.data, new, regions.head, new_head, scan.zooms, rng,
                        model=maps.air if maps is not None else None)
    changed = fresh != new
    out = raw.copy()
    out[changed] = scan.quantize(fresh[changed])
    return out


def save_result(result: Result, output: str | Path, *, force: bool = False) -> Path:
    """Write atomically; the temp file is re-read and the brain re-checked before it is renamed."""
    scan, preserved = result.scan, result.regions.preserved

    def check(img) -> None:
        written = np.asarray(img.dataobj.get_unscaled()).reshape(scan.shape)
        written = written.astype(written.dtype.newbyteorder("="), copy=False)  # MGH is big-endian on disk
        assert_preserved(scan, written, preserved)
        if not np.allclose(img.affine, scan.affine, atol=1e-5) or img.shape != scan.disk_shape:
            raise AssertionError("written grid differs from the input grid")

    return save_scan_like(scan, result.raw, output, force=force, check=check)


def deidentify_file(input_path: str | Path, output_path: str | Path, method: str = DEFAULT_METHOD, *,
                    seed: int = 0, brain_mask: str | Path | None = None, margin_mm: float = DEFAULT_MARGIN_MM,
                    save_mask: str | Path | None = None, qa: str | Path | None = None, force: bool = False,
                    device: str = "cpu", progress: Progress | None = None, volume: int | None = None,
                    **options) -> Result:
    """File to file: the function behind `reface run`, batch mode and evaluation.

    The output format follows its name (.nii/.nii.gz NIfTI, .mgz/.mgh MGH); a name in a format reface
    reads but cannot write (.mnc, .PAR, .img) becomes .nii.gz beside it, with a warning. `volume` picks one
    volume of a 4D input; only that volume is written (the others show the same face).
    """
    output_path, note = resolve_output(Path(output_path))
    if save_mask is not None:
        output_kind(Path(save_mask))
    for target in (output_path, save_mask, qa):
        if target is not None and Path(target).exists() and not force:
            raise RefaceError(f"output exists: {target} (use --force to overwrite)")
    say = progress or (lambda _msg: None)
    say("reading")
    scan = load_scan(input_path, volume=volume)
    brain = load_mask(brain_mask, scan) if brain_mask is not None else None
    result = deidentify(scan, method, seed=seed, brain=brain, margin_mm=margin_mm, device=device,
                        progress=progress, **options)
    if note is not None:
        result.warnings.append(note)
    say("writing")
    result.output = save_result(result, output_path, force=force)
    if save_mask is not None:
        save_mask_like(scan, result.regions.preserved, save_mask, force=force)
    if qa is not None:
        from .qa import save_qa

        save_qa(result, qa, force=force)
    return result


class _CallableModule(types.ModuleType):
    """`reface.deidentify` names both this module and its function, and importing the module rebinds the name:
    whichever of the two the package holds, calling it de-identifies."""

    def __call__(self, *args, **kwargs) -> Result:
        return deidentify(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
