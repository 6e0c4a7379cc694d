"""Hand-derived derivatives checked against autodiff (`make verify`)."""
