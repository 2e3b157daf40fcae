"""The diagonal Fisher information of a trained model on its task, for EWC
(training/optimizers.ewc_penalty; Kirkpatrick et al. 2017).

F_i = mean over examples of (d log p(y | x) / d theta_i)^2, the empirical Fisher: each
example's gradient of the objective's loss at its gold label (the true Fisher would sample
y from the model). Each example is its own batch of one row, so the squares are of
per-example gradients, not of a batch gradient; the loader's padding rows weigh nothing.
Saved as .npz, one array per parameter path ('encoder/block_0/attention/query/kernel'),
written atomically; `accumulate` adds an earlier file (online EWC's running sum over tasks,
Schwarz et al. 2018), and `read` turns a file into the params tree EWC's state holds.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from data import atomic_files
from training import compressed_run, pretrained


@functools.partial(jax.jit, static_argnames=('loss_fn',))
def _squared_gradients(params, batch, *, loss_fn):
  """(sum over the batch's real rows of each row's squared gradient, real rows): the rows
  one after the other (a scan), so only the running sum is held."""
  real = batch['segment_ids'].reshape(batch['segment_ids'].shape[0], -1)[:, 0] > 0
  rows = jax.tree.map(lambda a: a[:, None], batch)  # [rows, 1, ...]: a batch of one each.

  def add_row(total, xs):
    row, weight = xs
    grads = jax.grad(lambda p: loss_fn(p, row)[0])(params)
    return jax.tree.map(lambda t, g: t + weight * jnp.square(g), total, grads), None

  zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)
  total, _ = jax.lax.scan(add_row, zeros, (rows, real.astype(jnp.float32)))
  return total, jnp.sum(real)


def diagonal_fisher(objective, model, params, batches, examples: int) -> tuple[dict, int]:
  """(the Fisher as a params-shaped tree of NumPy arrays, examples used) over the first
  `examples` real rows of `batches` (preprocessed host batches, e.g. a train loader)."""
  loss_fn = functools.partial(_loss, objective=objective, model=model)
  total, count = None, 0
  for batch in batches:
    sums, n = _squared_gradients(params, batch, loss_fn=loss_fn)
    total = sums if total is None else jax.tree.map(jnp.add, total, sums)
    count += int(n)
    if count >= examples:
      break
  if not count:
    raise ValueError('No real example to estimate the Fisher from.')
  return jax.tree.map(lambda t: np.asarray(t, np.float32) / count, total), count


def of_run(run: str, examples: int, defaults=None) -> tuple[dict, int, object]:
  """(Fisher tree, examples used, compressed_run.SourceRun) of train.py run `run` (best
  checkpoint, else newest) over the first `examples` rows of its own train split, in its
  training order (`defaults`: compressed_run.read_run's)."""
  source = compressed_run.read_run(run, defaults)
  exp = compressed_run.build_experiment(source)
  model = exp.objective.build_model(source.model_cfg)
  batches = compressed_run.train_batches(exp, -(-examples // source.config.batch_size))
  fisher, count = diagonal_fisher(exp.objective, model, source.params, batches, examples)
  return fisher, count, source


def _loss(params, batch, *, objective, model):
  return objective.loss_fn(params, batch, None, model=model)


def _flat(tree) -> dict:
  flat = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    flat['/'.join(str(getattr(p, 'key', p)) for p in path)] = np.asarray(leaf)
  return flat


def save(path: str, fisher, accumulate: str = '') -> dict:
  """Writes `fisher` (plus the file `accumulate`, when given) to `path`; returns the flat
  arrays written.

  Raises:
    ValueError: `accumulate` holds other parameters or shapes.
  """
  flat = _flat(fisher)
  if accumulate:
    with np.load(accumulate) as earlier:
      if set(earlier.files) != set(flat):
        raise ValueError(f'{accumulate}: not the Fisher of the same parameters.')
      for name in flat:
        if earlier[name].shape != flat[name].shape:
          raise ValueError(f'{accumulate}: {name} has shape {earlier[name].shape}.')
        flat[name] = flat[name] + earlier[name]
  atomic_files.write_npz(path, flat)
  return flat


def read(path: str, like, shardings) -> tuple[dict, dict]:
  """(the Fisher in `path` as a tree like the params `like`, placed with `shardings`;
  pretrained.merge's report). Parameters the file lacks (a head added since) get 0."""
  with np.load(path) as data:
    nested = {}
    for name in data.files:
      node = nested
      *parents, leaf = name.split('/')
      for key in parents:
        node = node.setdefault(key, {})
      node[leaf] = data[name]
  zeros = jax.tree.map(jnp.zeros_like, like)
  return pretrained.merge(zeros, nested, shardings)
