"""Calibration: rarity tagging (rarity), streamed statistics (stats), the true-sequential driver (pipeline,
driver). Submodules are imported explicitly (``from tarq.calib.pipeline import run_calibration``) so that
``tarq.methods`` can use ``tarq.calib.stats`` without an import cycle."""
from .stats import GroupStats, StatsAccumulator

__all__ = ["GroupStats", "StatsAccumulator"]
