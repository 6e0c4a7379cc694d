"""Run folders: config, metrics, summary, plots, checkpoints, and the lock that names the process."""
