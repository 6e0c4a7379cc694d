"""Evaluation: metrics computed from trained parameters (link prediction, ...)."""
