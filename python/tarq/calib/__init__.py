"""Calibration: rarity tagging, streamed statistics, the true-sequential pipeline driver."""
from .pipeline import CalibConfig, run_calibration, select_subset
from .stats import GroupStats, StatsAccumulator

__all__ = ["CalibConfig", "GroupStats", "StatsAccumulator", "run_calibration", "select_subset"]
