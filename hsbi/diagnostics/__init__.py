"""Diagnostics: calibration and closure (to come with the training issue)."""
