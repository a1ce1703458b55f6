"""`reface bids` end to end on a small phantom BIDS dataset, plus the multi-contrast pieces.

Dataset: sub-01 with two sessions (T1w 4 mm RAS + T2w 5 mm LPS with the head moved 4-6 degrees and a few mm,
sidecars with identifying fields) and sub-02 whose T1w file is truncated. Brain masks come from the
desc-brain_mask files beside each T1w, so no deepbet call is made.
"""

import json
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from reface import geometry
from reface.batch import Summary, _result_or_lost, run_bids, throughput
from reface.batch_manifest import MANIFEST_NAME, Manifest, skip_reason
from reface.batch_worker import Settings, Task
from reface.bids import discover
from reface.bids_phantom import _t2_phantom, write_phantom_dataset
from reface.cli import main as cli_main
from reface.deidentify import Result
from reface.errors import RefaceError
from reface.io import Scan, load_mask, load_scan
from reface.masks import grow, make_regions
from reface.multicontrast import intensity_mapping, register_rigid, transfer_face

METHOD = "shear"  # changes the face, cheap on the working grid


def _raw(path: Path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj.get_unscaled())


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = write_phantom_dataset(tmp_path_factory.mktemp("bids") / "ds", subjects=2, sessions=2)
    for session in ("1", "2"):  # sub-02: a corrupt T1w in one session, nothing in the other
        anat = root / "sub-02" / f"ses-{session}" / "anat"
        (anat / f"sub-02_ses-{session}_T2w.nii.gz").unlink()
        (anat / f"sub-02_ses-{session}_T2w.json").unlink()
        if session == "2":
            for path in anat.iterdir():
                path.unlink()
    t1 = root / "sub-02/ses-1/anat/sub-02_ses-1_T1w.nii.gz"
    t1.write_bytes(t1.read_bytes()[: t1.stat().st_size // 2])
    return root


@pytest.fixture(scope="module")
def first_run(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "deid"
    code = cli_main(["bids", str(dataset), str(out), "participant", "--method", METHOD, "--seed", "3",
                     "--jobs", "2", "--quiet"])
    return out, code


def test_outputs_form_a_derivative_dataset(dataset, first_run):
    out, code = first_run
    assert code == 1  # one scan failed
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"
    assert description["GeneratedBy"][0]["Name"] == "reface"
    assert description["reface"]["method"] == METHOD and description["reface"]["seed"] == 3
    images = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.nii.gz"))
    assert images == [f"sub-01/ses-{s}/anat/sub-01_ses-{s}_desc-deid_{c}.nii.gz" for s in "12" for c in ("T1w", "T2w")]
    assert (out / "participants.tsv").read_bytes() == (dataset / "participants.tsv").read_bytes()  # nothing to drop
    assert MANIFEST_NAME in (out / ".bidsignore").read_text().split()
    # scans.tsv: derivative names, acq_time dropped by default; no scans file where nothing was written
    assert (out / "sub-01/ses-2/sub-01_ses-2_scans.tsv").read_text() == (
        "filename\nanat/sub-01_ses-2_desc-deid_T1w.nii.gz\nanat/sub-01_ses-2_desc-deid_T2w.nii.gz\n")
    assert not (out / "sub-02").exists()


def test_brains_bit_exact_and_faces_changed_in_every_contrast(dataset, first_run):
    out, _ = first_run
    for s in "12":
        anat_in, anat_out = dataset / f"sub-01/ses-{s}/anat", out / f"sub-01/ses-{s}/anat"
        t1_in = load_scan(anat_in / f"sub-01_ses-{s}_T1w.nii.gz")
        brain = load_mask(anat_in / f"sub-01_ses-{s}_desc-brain_mask.nii.gz", t1_in)
        t1_out = _raw(anat_out / f"sub-01_ses-{s}_desc-deid_T1w.nii.gz")
        preserved = grow(brain, 4.0, t1_in.zooms)
        assert np.array_equal(t1_out[preserved], t1_in.raw[preserved])
        assert np.count_nonzero(t1_out != t1_in.raw) > 500  # the face changed
        # T2w: its own brain (known from the phantom), grown by 2 mm, is bit-identical; its face changed too.
        t2_in = load_scan(anat_in / f"sub-01_ses-{s}_T2w.nii.gz")
        _, t2_brain = _t2_phantom(t2_in.shape, t2_in.zooms, axcodes="LPS", rotate_deg=4.0 + int(s),
                                  shift_mm=(2.0, -3.0 * int(s), 4.0), seed=10 + int(s))
        t2_out = _raw(anat_out / f"sub-01_ses-{s}_desc-deid_T2w.nii.gz")
        kept = grow(t2_brain, 2.0, t2_in.zooms)
        assert np.array_equal(t2_out[kept], t2_in.raw[kept])
        assert np.count_nonzero(t2_out != t2_in.raw) > 50
        assert nib.load(str(anat_out / f"sub-01_ses-{s}_desc-deid_T2w.nii.gz")).header["descrip"] == b""


def test_sidecars_scrubbed(first_run):
    out, _ = first_run
    for path in out.glob("sub-01/ses-*/anat/*.json"):
        data = json.loads(path.read_text())
        assert "RepetitionTime" in data and "EchoTime" in data
        for key in ("PatientName", "PatientBirthDate", "AcquisitionDateTime", "InstitutionName",
                    "DeviceSerialNumber", "ImageComments"):
            assert key not in data, (path.name, key)


def test_corrupt_file_reported_and_rerun_skips_everything(dataset, first_run, capsys):
    out, _ = first_run
    manifest = json.loads((out / MANIFEST_NAME).read_text())["entries"]
    bad = manifest["sub-02/ses-1/anat/sub-02_ses-1_T1w.nii.gz"]
    assert bad["status"] == "failed" and "cannot read" in bad["error"]
    assert {k: v["status"] for k, v in manifest.items() if k.startswith("sub-01")} == \
        {"sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz": "done", "sub-01/ses-2/anat/sub-01_ses-2_T1w.nii.gz": "done"}
    summary = run_bids(dataset, out, method=METHOD, seed=3, quiet=True)
    assert summary.done == [] and summary.failed == []
    assert len(summary.skipped) == 5 and not summary.complete  # the corrupt scan still has no output
    assert "failed before" in dict(summary.skipped)["sub-02/ses-1/anat/sub-02_ses-1_T1w.nii.gz"]


def test_changed_input_is_redone_and_others_skipped(dataset, first_run, tmp_path):
    out, _ = first_run
    t1_before = _raw(out / "sub-01/ses-2/anat/sub-01_ses-2_desc-deid_T1w.nii.gz")
    t2_path = dataset / "sub-01/ses-2/anat/sub-01_ses-2_T2w.nii.gz"
    img = nib.load(str(t2_path))
    data = np.asarray(img.dataobj).copy()
    data[0, 0, 0] += 5  # one background voxel: a changed file
    nib.save(nib.Nifti1Image(data, img.affine, img.header), str(t2_path))
    summary = run_bids(dataset, out, method=METHOD, seed=3, quiet=True)
    assert sorted(summary.done) == ["sub-01/ses-2/anat/sub-01_ses-2_T1w.nii.gz",
                                    "sub-01/ses-2/anat/sub-01_ses-2_T2w.nii.gz"]
    assert len(summary.skipped) == 3 and summary.failed == []
    assert np.array_equal(_raw(out / "sub-01/ses-2/anat/sub-01_ses-2_desc-deid_T1w.nii.gz"), t1_before)


def test_tampered_or_missing_output_or_new_settings_make_a_session_run_again(dataset, first_run):
    out, _ = first_run
    (session,) = discover(dataset, participants=["01"], sessions=["1"])
    entry = Manifest(out).entries[session.key]
    task = Task(session=session, bids_dir=str(dataset), output_dir=str(out), settings=Settings(method=METHOD, seed=3))
    assert skip_reason(entry, task) == "unchanged"
    assert skip_reason(entry, replace(task, settings=Settings(method=METHOD, seed=4))) is None
    target = out / "sub-01/ses-1/anat/sub-01_ses-1_desc-deid_T2w.nii.gz"
    original = target.read_bytes()
    try:
        target.write_bytes(original[:-10] + b"0123456789")
        assert skip_reason(entry, task) is None
        target.unlink()
        assert skip_reason(entry, task) is None
    finally:
        target.write_bytes(original)


def test_dask_local_cluster_gives_the_same_outputs(dataset, first_run, tmp_path):
    from distributed import Client, LocalCluster

    out, _ = first_run
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        summary = run_bids(dataset, tmp_path / "dask", method=METHOD, seed=3, participants=["01"],
                           sessions=["1"], scheduler=client, quiet=True)
        # the CLI path: a scheduler address; the corrupt scan fails on a Dask worker and is reported
        code = cli_main(["bids", str(dataset), str(tmp_path / "dask2"), "participant", "--participant-label",
                         "02", "--method", "none", "--scheduler", cluster.scheduler_address, "--quiet"])
        assert code == 1
        entry = json.loads((tmp_path / "dask2" / MANIFEST_NAME).read_text())["entries"]
        assert entry["sub-02/ses-1/anat/sub-02_ses-1_T1w.nii.gz"]["status"] == "failed"
    assert sorted(summary.done) == ["sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz",
                                    "sub-01/ses-1/anat/sub-01_ses-1_T2w.nii.gz"]
    name = "sub-01/ses-1/anat/sub-01_ses-1_desc-deid_T1w.nii.gz"
    assert np.array_equal(_raw(tmp_path / "dask" / name), _raw(out / name))


def test_cli_refuses_output_inside_input_and_scrubs_participants(dataset, tmp_path, capsys):
    assert cli_main(["bids", str(dataset), str(dataset / "derivatives" / "x"), "participant", "--quiet"]) == 2
    assert "inside the input dataset" in capsys.readouterr().err
    code = cli_main(["bids", str(dataset), str(tmp_path / "o"), "participant", "--participant-label", "sub-02",
                     "--method", "none", "--scrub-participants", "--quiet"])
    assert code == 1
    assert (tmp_path / "o" / "participants.tsv").read_text() == "participant_id\nsub-01\nsub-02\n"
    assert set(json.loads((tmp_path / "o" / "participants.json").read_text())) == {"Description", "participant_id"}
    assert "sub-02_ses-1_T1w.nii.gz" in capsys.readouterr().err


# --- multi-contrast pieces ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pair(dataset):
    anat = dataset / "sub-01/ses-1/anat"
    t1 = load_scan(anat / "sub-01_ses-1_T1w.nii.gz")
    t2 = load_scan(anat / "sub-01_ses-1_T2w.nii.gz")
    brain = load_mask(anat / "sub-01_ses-1_desc-brain_mask.nii.gz", t1)
    # What deidentify(t1, "none") returns, without the cost of the working grid.
    return t1, t2, Result(scan=t1, raw=t1.raw.copy(), regions=make_regions(t1, brain=brain), method="none", seed=0)


def test_register_rigid_recovers_the_known_motion(pair):
    t1, t2, _ = pair
    transform = register_rigid(t2, t1)
    theta = np.deg2rad(5.0)  # write_phantom_dataset: session 1 turned 5 degrees about z, moved (2, -3, 4) mm
    rot = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
    expected = np.eye(4)
    expected[:3, :3] = rot.T
    expected[:3, 3] = -rot.T @ np.array([2.0, -3.0, 4.0])
    points = np.array([[0, 0, 0, 1], [60, 80, 40, 1], [-60, -80, -40, 1]], float).T
    error_mm = np.linalg.norm((transform @ points - expected @ points)[:3], axis=0)
    assert error_mm.max() < 1.0, error_mm
    # A phantom this small is sampled whole, so the sampling seed cannot move the fit (a 20 % sample moved
    # it by up to 1.65 mm, machine to machine).
    assert np.allclose(register_rigid(t2, t1, seed=5), transform, atol=1e-6)


def test_intensity_mapping_recovers_a_non_monotonic_lookup():
    rng = np.random.default_rng(0)
    source = rng.choice([100.0, 400.0, 700.0], size=30000) + rng.normal(0, 5, 30000)
    lookup = {100.0: 900.0, 400.0: 50.0, 700.0: 500.0}
    target = np.array([lookup[min(lookup, key=lambda k: abs(k - s))] for s in source]) + rng.normal(0, 5, 30000)
    centres, medians = intensity_mapping(source, target)
    for value, mapped in lookup.items():
        assert abs(np.interp(value, centres, medians) - mapped) < 15


def test_transfer_face_changes_only_the_face_and_keeps_the_brain(pair):
    t1, t2, result = pair
    world = np.stack(np.meshgrid(*[np.arange(n) for n in t1.shape], indexing="ij"), -1) @ t1.affine[:3, :3].T
    face = (world[..., 1] + t1.affine[1, 3] > 40) & ~result.regions.preserved  # everything anterior: "defaced"
    raw = t1.raw.copy()
    raw[face] = 0
    contrast = transfer_face(replace(result, raw=raw), t2)
    changed = contrast.raw != t2.raw
    assert np.array_equal(contrast.raw[contrast.preserved], t2.raw[contrast.preserved])
    assert changed.sum() > 1000 and not (changed & contrast.preserved).any()
    assert t2.data[changed].mean() > 3 * contrast.raw[changed].mean()  # the face became background
    ijk = np.argwhere(changed)
    y = (ijk @ t2.affine[:3, :3].T + t2.affine[:3, 3])[:, 1]
    assert np.percentile(y, 1) > 25  # only anterior voxels changed (face at y > 40 in T1w, head moved 3 mm)
    # the preserved region maps the T1w one: every T1w preserved point is preserved in the T2w
    t1_in_t2 = np.linalg.inv(contrast.transform) @ t1.affine
    mapped = geometry.resample_mask(result.regions.preserved, t1_in_t2, geometry.Grid(t2.shape, t2.affine))
    assert not (mapped & ~contrast.preserved).any()


def test_unregistrable_contrast_is_reported(pair):
    _, t2, result = pair
    blob = np.zeros(t2.shape, np.int16)
    blob[10:20, 10:20, 10:20] = 500
    other = Scan(raw=blob, affine=t2.affine, header=t2.header, source="blob.nii.gz")
    with pytest.raises(RefaceError, match="could not be registered"):
        transfer_face(result, other)
    far = np.eye(4)
    far[:3, 3] = [0.0, 0.0, 400.0]  # a (wrong) transform that puts the T1w nowhere near the contrast
    with pytest.raises(RefaceError, match="0% of its head inside the T1w field of view"):
        transfer_face(result, t2, transform=far)


@pytest.mark.slow
def test_throughput_reports_images_per_minute(tmp_path):
    root = write_phantom_dataset(tmp_path / "ds", subjects=1, sessions=1)
    rate = throughput(root, jobs=1, method="none")
    assert 0 < rate < 1e4


def test_manifest_writes_from_two_runs_merge(tmp_path):
    first, second = Manifest(tmp_path), Manifest(tmp_path)
    first.record("a", {"status": "done"})
    second.record("b", {"status": "failed"})
    first.flush()
    second.flush()
    assert Manifest(tmp_path).entries == {"a": {"status": "done"}, "b": {"status": "failed"}}


def test_a_lost_worker_is_a_transient_failure(dataset):
    from concurrent.futures import Future

    (session,) = discover(dataset, participants=["01"], sessions=["1"])
    task = Task(session=session, bids_dir=str(dataset), output_dir="unused", settings=Settings(method="none"))
    future = Future()
    future.set_exception(RuntimeError("killed by the OOM killer"))
    outcome = _result_or_lost(task, future)
    assert outcome.transient and outcome.status == "failed" and "OOM" in outcome.error
    assert [i.input for i in outcome.images] == [str(i.path) for i in session.images]
    summary = Summary()
    summary.add(outcome)
    assert len(summary.failed) == 2 and "2 failed" in summary.format()
