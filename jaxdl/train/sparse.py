"""Row-sparse SGD for embedding tables: a step that reads and writes only the rows it uses.

With embeddings, a batch touches a few thousand rows of tables with V rows. The dense
route -- `jax.grad` of the loss with respect to the whole tables, then an optax update --
materialises a (V, D) gradient (zeros plus a scatter-add), and the optimizer reads and
writes all V rows every step. The row-sparse route gathers the rows, differentiates the
loss with respect to the gathered rows only, and scatter-adds -lr * grad back into the
tables. For plain SGD the two are the same update (the gradient of a gather is that
scatter-add; repeated rows accumulate), which `tests/test_word2vec_model.py` checks; the
sparse one costs O(rows touched) instead of O(V). `make bench` measures both
(workload `w2v_update_*`), which is how word2vec here chose the sparse one.

An objective (`RowObjective`) is a pair of pure functions:
  select(batch, key) -> (indices, inputs): which rows of which table the batch reads
      ({'W_in': int array, ...}, any shapes) and whatever else the loss needs (masks,
      labels, negatives drawn from `key`);
  loss_on_rows(rows, inputs) -> (loss, metrics): the loss of the gathered rows
      (rows[name] = params[name][indices[name]], shape indices.shape + (D,));
and optionally
  value_and_row_grads(rows, inputs) -> ((loss, metrics), grads): the same loss with its
      gradient with respect to the rows, derived by hand (default: `jax.value_and_grad`
      of `loss_on_rows`; word2vec's are tested against it), or the direction a method
      moves the rows in instead of its gradient (word2vec.c's CBOW rule).
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxdl.train.step import TrainState, all_finite


class RowObjective(NamedTuple):
    select: Callable[[Any, jax.Array], tuple[dict, Any]]
    loss_on_rows: Callable[[dict, Any], tuple[jax.Array, dict]]
    value_and_row_grads: Callable[[dict, Any], tuple[tuple[jax.Array, dict], dict]] | None = None


def as_objective(objective) -> RowObjective:
    """A `RowObjective` from one, or from a (select, loss_on_rows) pair."""
    return objective if isinstance(objective, RowObjective) else RowObjective(*objective)


def gather_rows(params: dict, indices: dict) -> dict:
    """rows[name] = params[name][indices[name]] for every table the batch reads."""
    return {name: params[name][idx] for name, idx in indices.items()}


def dense_loss(objective: RowObjective):
    """The same objective as a loss of the whole parameter tables, `loss_fn(params, batch, key)`,
    for `jaxdl.train.step.make_train_step` (the dense route)."""

    select, loss_on_rows, _ = as_objective(objective)

    def loss_fn(params, batch, key):
        indices, inputs = select(batch, key)
        return loss_on_rows(gather_rows(params, indices), inputs)

    return loss_fn


def make_row_sparse_sgd_step(objective: RowObjective, lr_fn: Callable[[jax.Array, Any], jax.Array], *,
                             check_grads: bool = True):
    """`train_step(state, batch, key) -> (state, metrics)` doing SGD on the touched rows only.

    Args:
      objective: a `RowObjective` or a (select, loss_on_rows) pair (see the module docstring).
      lr_fn: (step, batch) -> learning rate for this step.
      check_grads: 'finite' also checks every row gradient (one more pass over them). An
        objective whose gradients are finite whenever its loss is (word2vec's: bounded
        sigmoid factors times the rows that made the finite loss) can skip it.
    Returns:
      the step; metrics are 'loss', the objective's metrics and 'finite' (as from
      `make_train_step`). `state.opt_state` is unused (plain SGD keeps no state).
    """

    select, loss_on_rows, value_and_row_grads = as_objective(objective)
    value_and_row_grads = value_and_row_grads or jax.value_and_grad(loss_on_rows, has_aux=True)

    def train_step(state: TrainState, batch, key):
        indices, inputs = select(batch, key)
        rows = gather_rows(state.params, indices)
        (loss, aux), grads = value_and_row_grads(rows, inputs)
        lr = lr_fn(state.step, batch)
        params = dict(state.params)
        for name, idx in indices.items():
            D = params[name].shape[-1]
            params[name] = params[name].at[idx.reshape(-1)].add((-lr * grads[name]).reshape(-1, D).astype(
                params[name].dtype))
        finite = all_finite((loss, grads)) if check_grads else jnp.isfinite(loss)
        metrics = {"loss": loss, **aux, "finite": finite}
        return TrainState(params, state.opt_state, state.step + 1), metrics

    return train_step


def skip_inactive(train_step, *, flag: str = "active"):
    """Run `train_step` only when `batch[flag]` is true; otherwise leave the parameters as
    they are, count the step, and report zero metrics (and 'finite' true). Epochs padded to
    a static number of steps skip their empty tail this way at almost no cost."""

    def step(state: TrainState, batch, key):
        def skip(state, batch, key):
            _, shapes = jax.eval_shape(train_step, state, batch, key)
            zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
            zeros["finite"] = jnp.array(True)
            return state._replace(step=state.step + 1), zeros

        return jax.lax.cond(batch[flag], train_step, skip, state, batch, key)

    return step


def linear_decay_by_progress(lr: float, *, min_lr: float, steps_per_epoch: int, epochs: int):
    """word2vec's schedule: lr falls linearly from `lr` to `min_lr` over the whole run,
    measured in examples done: epoch = step // steps_per_epoch plus the batch's 'progress'
    (fraction of this epoch's examples before it). Returns lr_fn(step, batch)."""

    def lr_fn(step, batch):
        done = (step // steps_per_epoch).astype(jnp.float32) + batch["progress"]
        frac = jnp.clip(done / epochs, 0.0, 1.0)
        return lr - (lr - min_lr) * frac

    return lr_fn
