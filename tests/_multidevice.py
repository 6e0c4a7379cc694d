"""Worker for tests/test_parallel.py: runs in its own process with 4 fake CPU devices.

`python tests/_multidevice.py OUT.npz` sets XLA_FLAGS before importing jax, trains
softmax regression and the MLP for a few epochs on 1, 2 and 4 devices with pmap and
shard_map (and the single-device reference), and records everything the tests compare.
It asserts nothing itself: the tests read OUT.npz (arrays) and OUT.json (messages).
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import sys

os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=4".strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from functools import partial  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxdl.errors import JaxdlError  # noqa: E402
from jaxdl.models.dense import mlp_apply, mlp_init, softmax_apply, softmax_init  # noqa: E402
from jaxdl.devices import select_devices  # noqa: E402
from jaxdl.devices.data_parallel import Layout, data_parallel, step_allreduce_bytes  # noqa: E402
from jaxdl.train.epoch import shuffled_batches  # noqa: E402
from jaxdl.train.optim import make_optimizer  # noqa: E402
from jaxdl.train.step import init_state, make_train_step  # noqa: E402
from jaxdl.losses.classification import classification_loss  # noqa: E402

EPOCHS, BATCH, N, D, C = 3, 32, 200, 12, 4  # 6 steps an epoch, 18 steps in all
# One device is the plain jitted scan ('single'); each form on 2 and 4 devices is compared
# with it. (Every compile costs ~1 s of a shared CPU, hence no more combinations.)
RUNS = [("single", 1), ("pmap", 2), ("pmap", 4), ("shard_map", 2), ("shard_map", 4)]
NOISY_RUNS = [("pmap", 4), ("shard_map", 2)]


def blobs():
    """Four Gaussian classes in 12 dimensions (a task the models learn in a few steps)."""
    kc, kx, ky = jax.random.split(jax.random.key(0), 3)
    centers = 2.0 * jax.random.normal(kc, (C, D))
    y = jax.random.randint(ky, (N,), 0, C)
    X = centers[y] + jax.random.normal(kx, (N, D))
    return {"X": np.asarray(X, np.float32), "y": np.asarray(y, np.int32)}


MODELS = {
    "softmax": (softmax_apply, lambda: softmax_init(jax.random.key(1), D, C, sigma=0.1), "sgd", 0.3),
    "mlp": (mlp_apply, lambda: mlp_init(jax.random.key(1), D, (16, 16), C, sigma=0.3), "adam", 0.01),
}


def placed(loss_fn, opt, mode, num_devices, make_batches, data, **kw):
    """The harness's composition: the step built with the layout's reduction, then placed."""
    layout = Layout(tuple(jax.devices()[:num_devices]), mode)
    step = make_train_step(loss_fn, opt, **layout.step_reduction)
    return data_parallel(step, make_batches, data, layout=layout, **kw)


def train(model, mode, num_devices, data, *, epochs=EPOCHS):
    apply_fn, init_fn, opt_name, lr = MODELS[model]
    opt = make_optimizer(opt_name, lr)
    dp = placed(classification_loss(apply_fn), opt, mode, num_devices, partial(shuffled_batches, batch_size=BATCH),
                data, batch_size=BATCH)
    state = dp.place(init_state(init_fn(), opt))
    losses = []
    for e in range(epochs):
        state, metrics = dp.epoch_fn(state, jax.random.fold_in(jax.random.key(3), e))
        losses.append(np.asarray(metrics["loss"]))
    host = dp.to_host(state)
    assert isinstance(jax.tree.leaves(host.params)[0], np.ndarray)
    return host, np.concatenate(losses)


def noisy_step(mode, num_devices):
    """One step of a loss that uses its key: grad = mean over devices of u_i * mean(X_i)."""

    def loss_fn(params, batch, key):
        u = jax.random.uniform(key, ())
        return u * jnp.mean(batch["X"] @ params["w"]), {"u": u}

    data = {"X": np.arange(8 * 3, dtype=np.float32).reshape(8, 3)}
    opt = make_optimizer("sgd", 1.0)
    dp = placed(loss_fn, opt, mode, num_devices, partial(shuffled_batches, batch_size=8), data)
    state, metrics = dp.epoch_fn(dp.place(init_state({"w": np.zeros(3, np.float32)}, opt)), jax.random.key(9))
    return dp.to_host(state).params["w"], np.asarray(metrics["u"])


def cli(*argv):
    from jaxdl.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(list(argv))
    return {"code": code, "stderr": err.getvalue().strip().splitlines()}


def main(out: str) -> None:
    data = blobs()
    arrays, report = {}, {"devices": len(jax.devices())}
    for model in MODELS:
        for mode, n in RUNS:
            state, losses = train(model, mode, n, data)
            for i, leaf in enumerate(jax.tree.leaves((state.params, state.opt_state))):
                arrays[f"{model}/{mode}/{n}/leaf{i}"] = leaf
            arrays[f"{model}/{mode}/{n}/losses"] = losses
            arrays[f"{model}/{mode}/{n}/step"] = np.asarray(state.step)
    for mode, n in NOISY_RUNS:
        w, u = noisy_step(mode, n)
        arrays[f"noisy/{mode}/{n}/w"], arrays[f"noisy/{mode}/{n}/u"] = w, u
    try:
        train("softmax", "pmap", 3, data)
        report["indivisible"] = "no error"
    except JaxdlError as e:
        report["indivisible"] = str(e)
    report["select"] = {spec: [d.id for d in select_devices(spec)] for spec in ("all", "2", ":2", "1:3", "1,3")}
    report["cli"] = {"too_many": cli("exp", "softmax", "--devices", "5", "--out", f"{out}.r1"),
                     "duplicate": cli("exp", "softmax", "--devices", "0,2,2", "--out", f"{out}.r2"),
                     "indivisible": cli("exp", "softmax", "--devices", ":3", "--batch-size", "64",
                                        "--out", f"{out}.r3"),
                     "bad_mode": cli("exp", "softmax", "--parallel", "vmap", "--out", f"{out}.r4")}
    apply_fn, init_fn, opt_name, lr = MODELS["mlp"]
    four = Layout(tuple(jax.devices()), "shard_map")
    opt = make_optimizer("sgd", 0.1)
    report["allreduce_bytes"] = step_allreduce_bytes(
        make_train_step(classification_loss(apply_fn), opt, **four.step_reduction), init_state(init_fn(), opt),
        {k: v[:BATCH] for k, v in data.items()}, four.devices)
    np.savez(out, **arrays)
    with open(out + ".json", "w") as f:
        json.dump(report, f)


if __name__ == "__main__":
    main(sys.argv[1])
