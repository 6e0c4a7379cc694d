"""Core workloads: what `jax.jit` buys on the book's dense models, against PyTorch eager.

Every step is the library's own: `make_train_step(loss_fn, sgd(lr))` with the loss of the
experiment that trains the model (experiments/linreg.py, `supervised.classification_loss`)
and the parameters from `jaxdl.models.dense`, so the figures are what `make exp` runs.

  eager_ms    the same step function called without `jax.jit`: op by op, each primitive
              dispatched on its own.
  jit_ms      `jax.jit(train_step, donate_argnums=0)` in steady state, the state threaded
              from call to call (donated, as the library's epochs do).
  compile_ms  one-time cost of `jit(...).lower(args).compile()` (tracing, lowering, XLA).
  gflop       matmul FLOPs of one call, counted by hand: 2*m*k*n per product, forward and
              backward (the weight gradient of every layer, the input gradient of every
              layer but the first: the data need no gradient); element-wise work is left
              out. Tested within 2% of XLA's own count of the compiled step. `peak_fraction`
              (added by the harness) = achieved GFLOP/s over the run's measured matmul peak.

The epoch (`softmax_epoch`) is timed four ways: `scan_ms` (= `jit_ms`) the compiled epoch
as `supervised.train` runs it (shuffle and 234 steps in one `lax.scan`, each minibatch
gathered inside the scan body: `shuffled_indices` + `take_rows`); `scan_copy_ms` the same
with the shuffled copy of the data written out first (`shuffled_batches`); `loop_ms` a
Python loop of jitted steps; `eager_ms` that loop with nothing jitted.

Every timing is a median over repeats after warm-up, synchronised with
`block_until_ready` (p10/p90 alongside). PyTorch peers run with the same thread count:
the MLP step in eager mode, and the softmax-regression epoch as the book's
`DataLoader(TensorDataset, shuffle=True)` loop and as plain tensor indexing of a
`randperm` (the fast way to write it by hand). `ratio_<peer>` = jaxdl / peer: below 1
jaxdl is faster.
"""
from __future__ import annotations

import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.peers import import_torch
from benchmarks.registry import BenchContext, Workload
from benchmarks.timing import time_call
from jaxdl import matcalc
from jaxdl.cli import load_experiment
from jaxdl.data.synthetic import linreg_data
from jaxdl.models import dense
from jaxdl.train import epoch as ep
from jaxdl.train.optim import sgd
from jaxdl.train.step import init_state, make_train_step
from jaxdl.losses.classification import classification_loss

SEED = 0
FASHION = {"num_inputs": 784, "num_classes": 10, "batch_size": 256, "lr": 0.1}  # the book's settings
MLP_HIDDEN = 256
EPOCH_EXAMPLES = 60_000  # Fashion-MNIST's training set size


def target(what: str, value: float | None, limit: float, *, at_most: bool = True) -> dict:
    """A performance target the record is checked against: `value` against `limit` (None when
    not measured, e.g. no peer)."""
    met = None if value is None else (value <= limit if at_most else value >= limit)
    return {"target": what, "value": value, "limit": limit, "met": met}


# ---- FLOP counts --------------------------------------------------------------------------------

def dense_train_gflop(batch: int, sizes: list[int]) -> float:
    """Matmul GFLOP of one training step of a stack of dense layers sizes[0] -> ... -> sizes[-1]:
    forward 2*B*din*dout per layer, backward the same for the weight gradient, and again for
    the input gradient of every layer but the first (nothing differentiates the inputs)."""
    flops = 0
    for i, (din, dout) in enumerate(zip(sizes[:-1], sizes[1:])):
        per_product = 2 * batch * din * dout
        flops += per_product * (2 if i == 0 else 3)
    return flops / 1e9


# ---- timing helpers -----------------------------------------------------------------------------

def threaded(step, state, *args):
    """A no-argument callable that advances `state` by `step(state, *args)` on every call and
    returns (state, metrics), so a donated state is never reused."""
    box = [state]

    def call():
        box[0], metrics = step(box[0], *args)
        return box[0], metrics

    return call


def time_step(train_step, make_state, args: tuple, ctx: BenchContext, *, repeats: int, eager_repeats: int,
              min_seconds: float = 0.0) -> dict:
    """eager_ms, jit_ms (+ p10/p90) and compile_ms of `train_step(state, *args)`."""
    out: dict = {}
    jitted = jax.jit(train_step, donate_argnums=0)
    state = make_state()
    t0 = time.perf_counter()
    jitted.lower(state, *args).compile()
    out["compile_ms"] = (time.perf_counter() - t0) * 1e3
    jit_t = time_call(threaded(jitted, state, *args), warmup=3, repeats=repeats, min_seconds=min_seconds)
    eager_t = time_call(threaded(train_step, make_state(), *args), warmup=2, repeats=eager_repeats)
    for name, t in (("jit", jit_t), ("eager", eager_t)):
        out.update({f"{name}_ms": t["median_ms"], f"{name}_p10_ms": t["p10_ms"], f"{name}_p90_ms": t["p90_ms"],
                    f"{name}_repeats": t["repeats"]})
    out["speedup"] = out["eager_ms"] / out["jit_ms"]
    return out


def time_host(fn, *, warmup: int, repeats: int) -> dict:
    """Median/p10/p90 milliseconds of a host (e.g. PyTorch) callable."""
    def call():
        fn()  # the peer's result is not a JAX value: nothing to wait for

    return time_call(call, warmup=warmup, repeats=repeats)


def classification_data(key, n: int, num_inputs: int, num_classes: int):
    """Inputs in [0, 1) like scaled pixels, labels from a random linear teacher (learnable)."""
    kx, kw = jax.random.split(key)
    X = jax.random.uniform(kx, (n, num_inputs), jnp.float32)
    W = jax.random.normal(kw, (num_inputs, num_classes), jnp.float32)
    y = jnp.argmax((X - 0.5) @ W, axis=-1).astype(jnp.int32)
    return {"X": X, "y": y}


# ---- the step workloads -------------------------------------------------------------------------

def run_linreg_step(ctx: BenchContext) -> dict:
    """The book's linear regression step: 2 features, batch 10, lr 0.03 (D2L 3.4)."""
    loss_fn = load_experiment("linreg").loss_fn  # the experiment's own loss
    B, D, lr = 10, 2, 0.03
    k_data, k_init = jax.random.split(jax.random.key(SEED))
    X, y = linreg_data(k_data, B)
    optimizer = sgd(lr)
    train_step = make_train_step(loss_fn, optimizer)
    record = {"name": "linreg_step", "batch": B, "features": D, "gflop": dense_train_gflop(B, [D, 1])}
    record.update(time_step(train_step, lambda: init_state(dense.linreg_init(k_init, D), optimizer),
                            ({"X": X, "y": y}, jax.random.key(1)), ctx,
                            repeats=50 if ctx.quick else 2000, eager_repeats=10 if ctx.quick else 200))
    record["targets"] = [target("jit over eager >= 20x", record["speedup"], 20.0, at_most=False)]
    return record


def _classifier_step(ctx: BenchContext, *, name: str, hidden: list[int]) -> dict:
    c = FASHION
    k_data, k_init = jax.random.split(jax.random.key(SEED))
    batch = classification_data(k_data, c["batch_size"], c["num_inputs"], c["num_classes"])
    optimizer = sgd(c["lr"])
    if hidden:
        init = partial(dense.mlp_init, k_init, c["num_inputs"], hidden, c["num_classes"])
        apply_fn = dense.mlp_apply
    else:
        init = partial(dense.softmax_init, k_init, c["num_inputs"], c["num_classes"])
        apply_fn = dense.softmax_apply
    train_step = make_train_step(classification_loss(apply_fn), optimizer)
    sizes = [c["num_inputs"], *hidden, c["num_classes"]]
    record = {"name": name, "batch": c["batch_size"], "sizes": sizes, "optimizer": f"sgd(lr={c['lr']})",
              "gflop": dense_train_gflop(c["batch_size"], sizes)}
    record.update(time_step(train_step, lambda: init_state(init(), optimizer), (batch, jax.random.key(1)), ctx,
                            repeats=10 if ctx.quick else 200, eager_repeats=5 if ctx.quick else 50,
                            min_seconds=0.0 if ctx.quick else 2.0))
    if ctx.peak_gflops:
        record["roofline_ms"] = record["gflop"] / ctx.peak_gflops * 1e3
        record["jit_over_roofline"] = record["jit_ms"] / record["roofline_ms"]
    return record


def run_softmax_step(ctx: BenchContext) -> dict:
    """Softmax regression 784 -> 10, batch 256, SGD (the book's Fashion-MNIST setting)."""
    return _classifier_step(ctx, name="softmax_step", hidden=[])


def run_mlp_step(ctx: BenchContext) -> dict:
    """MLP 784 -> 256 (ReLU) -> 10, batch 256, SGD; against the same step in PyTorch eager."""
    record = _classifier_step(ctx, name="mlp_step", hidden=[MLP_HIDDEN])
    torch = import_torch(ctx)
    record["targets"] = [target("jit within 1.25x of the roofline time", record.get("jit_over_roofline"), 1.25)]
    if torch is None:
        record["peer_note"] = "torch not installed"
        return record
    c = FASHION
    batch = classification_data(jax.random.split(jax.random.key(SEED))[0], c["batch_size"], c["num_inputs"],
                                c["num_classes"])
    X_t, y_t = torch.tensor(np.asarray(batch["X"])), torch.tensor(np.asarray(batch["y"])).long()
    torch.manual_seed(SEED)
    net = torch.nn.Sequential(torch.nn.Linear(c["num_inputs"], MLP_HIDDEN), torch.nn.ReLU(),
                              torch.nn.Linear(MLP_HIDDEN, c["num_classes"]))
    _torch_book_init(torch, net)
    opt = torch.optim.SGD(net.parameters(), lr=c["lr"])
    loss_fn = torch.nn.CrossEntropyLoss()

    def torch_step():
        loss = loss_fn(net(X_t), y_t)
        opt.zero_grad()
        loss.backward()
        opt.step()

    t = time_host(torch_step, warmup=3, repeats=10 if ctx.quick else 200)
    record.update({"peer_torch_eager_ms": t["median_ms"], "peer_torch_eager_p10_ms": t["p10_ms"],
                   "peer_torch_eager_p90_ms": t["p90_ms"], "ratio_torch_eager": record["jit_ms"] / t["median_ms"]})
    record["targets"].append(target("no slower than PyTorch eager (ratio)", record["ratio_torch_eager"], 1.0))
    return record


def _torch_book_init(torch, net) -> None:
    """The book's initialisation, as jaxdl's: weights N(0, 0.01^2), biases zero."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.Linear):
                m.weight.normal_(0.0, 0.01)
                m.bias.zero_()


# ---- a whole epoch ------------------------------------------------------------------------------

def run_softmax_epoch(ctx: BenchContext) -> dict:
    """One softmax-regression epoch over 60,000 x 784 inputs, batch 256 (234 steps): the whole
    epoch as one compiled `lax.scan` (shuffle included, minibatches gathered inside the scan
    body), a Python loop of jitted steps, and the same loop of eager steps; PyTorch as the
    book's DataLoader loop and as indexing with a randperm."""
    c = FASHION
    n = 2048 if ctx.quick else EPOCH_EXAMPLES
    B = c["batch_size"]
    S = ep.num_batches(n, B)
    key = jax.random.key(SEED)
    k_data, k_init, k_epoch = jax.random.split(key, 3)
    data = classification_data(k_data, n, c["num_inputs"], c["num_classes"])
    optimizer = sgd(c["lr"])
    train_step = make_train_step(classification_loss(dense.softmax_apply), optimizer)

    def fresh_state():
        return init_state(dense.softmax_init(k_init, c["num_inputs"], c["num_classes"]), optimizer)

    record: dict = {"name": "softmax_epoch", "examples": n, "batch": B, "steps": S,
                    "gflop": S * dense_train_gflop(B, [c["num_inputs"], c["num_classes"]])}
    repeats = 3 if ctx.quick else 10
    scan_epoch = _time_scan_epochs(record, train_step, fresh_state, data, k_epoch, batch_size=B, repeats=repeats)
    loop_epoch = _time_loop_epochs(record, train_step, fresh_state, data, k_epoch, batch_size=B, repeats=repeats,
                                   eager_repeats=2 if ctx.quick else 3)
    record["speedup"] = record["eager_ms"] / record["jit_ms"]
    record["scan_over_loop"] = record["loop_ms"] / record["scan_ms"]

    # the three forms train identically: one epoch each from the same state and key
    s_scan, _ = scan_epoch(fresh_state(), data, k_epoch)
    s_loop, _ = loop_epoch(fresh_state(), data, k_epoch)
    record["scan_vs_loop_max_abs_diff"] = max(float(jnp.max(jnp.abs(a - b))) for a, b in
                                              zip(jax.tree.leaves(s_scan.params), jax.tree.leaves(s_loop.params)))

    _torch_epochs(ctx, record, data, repeats=2 if ctx.quick else 3)
    record["targets"] = [
        target(">= 10x faster than the book's DataLoader loop (ratio)", record.get("ratio_torch_dataloader"), 0.1),
        target(">= 3x faster than PyTorch tensor indexing (ratio)", record.get("ratio_torch_slicing"), 1 / 3)]
    return record


def _time_scan_epochs(record: dict, train_step, fresh_state, data: dict, key, *, batch_size: int, repeats: int):
    """Time the compiled epoch (shuffle + every step in one executable, state donated; its
    compilation too) and the same with the shuffled copy of the data materialised first, into
    `record`; returns the compiled epoch."""
    B = batch_size
    # 1. the compiled epoch: shuffle + 234 steps in one executable, state donated
    scan_epoch = ep.make_scan_epoch(train_step, partial(ep.shuffled_indices, batch_size=B), load_batch=ep.take_rows)
    t0 = time.perf_counter()
    scan_epoch.lower(fresh_state(), data, key).compile()
    record["compile_ms"] = (time.perf_counter() - t0) * 1e3
    t = time_call(threaded(scan_epoch, fresh_state(), data, key), warmup=2, repeats=repeats)
    record.update({"scan_ms": t["median_ms"], "scan_p10_ms": t["p10_ms"], "scan_p90_ms": t["p90_ms"],
                   "jit_ms": t["median_ms"], "jit_p10_ms": t["p10_ms"], "jit_p90_ms": t["p90_ms"]})

    # the same, with the shuffled copy of the data materialised first (`shuffled_batches`)
    copy_epoch = ep.make_scan_epoch(train_step, partial(ep.shuffled_batches, batch_size=B))
    t = time_call(threaded(copy_epoch, fresh_state(), data, key), warmup=2, repeats=repeats)
    record.update({"scan_copy_ms": t["median_ms"], "scan_copy_p10_ms": t["p10_ms"], "scan_copy_p90_ms": t["p90_ms"]})
    return scan_epoch


def _time_loop_epochs(record: dict, train_step, fresh_state, data: dict, key, *, batch_size: int, repeats: int,
                      eager_repeats: int):
    """Time a Python loop of jitted steps and the same loop eager, into `record`; returns the
    jitted loop's epoch."""
    B = batch_size
    # 2. a Python loop of jitted steps over the same batches (shuffled by one jitted call)
    make_batches = jax.jit(partial(ep.shuffled_batches, batch_size=B))
    jitted_step = jax.jit(train_step, donate_argnums=0)

    def loop_epoch(state, data, key):
        k_batches, k_steps = jax.random.split(key)
        return ep.loop_steps(jitted_step, state, make_batches(data, k_batches), k_steps)

    t = time_call(threaded(loop_epoch, fresh_state(), data, key), warmup=1, repeats=repeats)
    record.update({"loop_ms": t["median_ms"], "loop_p10_ms": t["p10_ms"], "loop_p90_ms": t["p90_ms"]})

    # 3. eager: the same loop, nothing compiled beyond single primitives
    def eager_epoch(state, data, key):
        k_batches, k_steps = jax.random.split(key)
        return ep.loop_steps(train_step, state, ep.shuffled_batches(data, k_batches, B), k_steps)

    t = time_call(threaded(eager_epoch, fresh_state(), data, key), warmup=1, repeats=eager_repeats)
    record.update({"eager_ms": t["median_ms"], "eager_p10_ms": t["p10_ms"], "eager_p90_ms": t["p90_ms"]})
    return loop_epoch


def _torch_epochs(ctx: BenchContext, record: dict, data: dict, *, repeats: int) -> None:
    torch = import_torch(ctx)
    if torch is None:
        record["peer_note"] = "torch not installed"
        return
    # deferred: torch is optional, only installed by `make peers`
    from torch.utils.data import DataLoader, TensorDataset

    c = FASHION
    B = c["batch_size"]
    X_t, y_t = torch.tensor(np.asarray(data["X"])), torch.tensor(np.asarray(data["y"])).long()
    n = len(y_t)
    torch.manual_seed(SEED)
    net = torch.nn.Linear(c["num_inputs"], c["num_classes"])
    _torch_book_init(torch, net)
    opt = torch.optim.SGD(net.parameters(), lr=c["lr"])
    loss_fn = torch.nn.CrossEntropyLoss()

    def step(Xb, yb):
        loss = loss_fn(net(Xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def dataloader_epoch():  # the book's loop (d2l's DataModule.get_tensorloader); last batch dropped like jaxdl
        for Xb, yb in DataLoader(TensorDataset(X_t, y_t), batch_size=B, shuffle=True, drop_last=True):
            step(Xb, yb)

    def slicing_epoch():  # tensors indexed by a fresh permutation: no DataLoader
        order = torch.randperm(n)
        for i in range(0, n - B + 1, B):
            idx = order[i:i + B]
            step(X_t[idx], y_t[idx])

    for peer, fn in (("torch_dataloader", dataloader_epoch), ("torch_slicing", slicing_epoch)):
        t = time_host(fn, warmup=1, repeats=repeats)
        record.update({f"peer_{peer}_ms": t["median_ms"], f"peer_{peer}_p10_ms": t["p10_ms"],
                       f"peer_{peer}_p90_ms": t["p90_ms"], f"ratio_{peer}": record["jit_ms"] / t["median_ms"]})


# ---- matrix calculus ----------------------------------------------------------------------------

def run_matcalc_jacobian(ctx: BenchContext) -> dict:
    """`matcalc.jacobian` of X -> X^-1 (n x n, numerator layout: the n^2 x n^2 matrix
    d vec(X^-1) / d vec(X)^T = -(X^-T kron X^-1)), eager vs jitted; PyTorch's
    `torch.func.jacfwd(torch.linalg.inv)` beside it."""
    n = 8 if ctx.quick else 32
    X = jnp.eye(n) * np.sqrt(n) + jax.random.normal(jax.random.key(SEED), (n, n))

    def jac(X):
        return matcalc.jacobian(jnp.linalg.inv, X, layout="numerator")

    jitted = jax.jit(jac)
    t0 = time.perf_counter()
    jitted.lower(X).compile()
    record = {"name": "matcalc_jacobian", "function": "inv", "n": n, "jacobian_shape": [n * n, n * n],
              "compile_ms": (time.perf_counter() - t0) * 1e3}
    repeats = 5 if ctx.quick else 50
    for form, fn in (("jit", jitted), ("eager", jac)):
        t = time_call(fn, X, warmup=2, repeats=repeats)
        record.update({f"{form}_ms": t["median_ms"], f"{form}_p10_ms": t["p10_ms"], f"{form}_p90_ms": t["p90_ms"]})
    record["speedup"] = record["eager_ms"] / record["jit_ms"]
    Xi = np.linalg.inv(np.asarray(X, np.float64))  # the closed form, as a check on what was timed
    record["max_abs_err_vs_closed_form"] = float(np.max(np.abs(np.asarray(jitted(X)) + np.kron(Xi.T, Xi))))
    torch = import_torch(ctx)
    if torch is not None:
        X_t = torch.tensor(np.asarray(X))
        jac_t = torch.func.jacfwd(torch.linalg.inv)
        t = time_host(lambda: jac_t(X_t), warmup=2, repeats=repeats)
        record.update({"peer_torch_ms": t["median_ms"], "ratio_torch": record["jit_ms"] / t["median_ms"]})
    return record


def workloads() -> list[Workload]:
    return [Workload("linreg_step", run_linreg_step), Workload("softmax_step", run_softmax_step),
            Workload("mlp_step", run_mlp_step), Workload("softmax_epoch", run_softmax_epoch),
            Workload("matcalc_jacobian", run_matcalc_jacobian)]
