"""Models as pure functions: `init(key, ...) -> params` (a pytree) and `apply(params, X) -> out`."""
