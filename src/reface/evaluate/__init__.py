"""Evaluation: what an attacker sees (surface renderings), whether a face recogniser re-identifies it,
and the pure metrics that turn similarity scores and masks into numbers for the report.
"""
