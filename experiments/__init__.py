"""One module per experiment: a documented `Config` and a thin `main(cfg) -> Run`."""
