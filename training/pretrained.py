"""The weights of the checkpoint a fine-tuning run starts from (`config.init_from`).

`init_from` is a converted checkpoint (`python -m models.convert`, e.g. all-MiniLM-L6-v2
or bert-base-uncased) or a train.py run directory (its newest checkpoint's params);
training/model_setup.describe reads its model config and tokenizer. The pretrained
model's config sizes the fine-tuned model (the run's `model.preset` is not used) and its
tokenizer is the run's unless `data.tokenizer_path` names one; the run's dtype, dropout
and adapter settings still apply. `merge` copies every pretrained leaf whose path the
fine-tuned model also has (the encoder, the pooler) and keeps the fresh initialization
of the rest (the task head, adapters); pretraining heads the model lacks are left
behind. `load_run` also hands a run to the exporter (`python -m models.convert --to hf`)
and to LM evaluation as a `Converted`. Either kind is checked against the digests saved
with it (models/convert/converted.py, training/integrity.py): damaged weights are an
error, never a silent start.
"""

import json
import os

import jax
import numpy as np

from models import convert
from models.convert import converted, mapping, scan
from models.convert.converted import Converted
from training import best_checkpoint, checkpointing, integrity, model_setup


def latest_params(workdir: str) -> tuple[dict, int]:
  """(params as NumPy arrays, layers looped; step) of run `workdir`'s newest checkpoint,
  verified against its digests; the optimizer state stays behind.

  Raises:
    FileNotFoundError: the run has no checkpoint.
    ValueError: its newest checkpoint is damaged (it is another run's: nothing is moved).
  """
  checkpointer = checkpointing.Checkpointer(workdir, keep=0, save_every=1, read_only=True)
  try:
    step = checkpointer.latest_step()
    if step is None:
      raise FileNotFoundError(f'No checkpoint in {workdir}/checkpoints.')
    state, _, _ = checkpointer.restore_as_saved(step)
  except integrity.CorruptCheckpointError as error:
    raise ValueError(
      f'init_from {workdir}: its newest checkpoint is damaged ({error}); move '
      f'{checkpointer.directory}/{error.step} aside to start from the step before, or '
      'resume that run once (train.py moves it aside and falls back by itself).'
    ) from error
  finally:
    checkpointer.close()
  params = scan.jax_to_numpy(state['params'])
  with open(os.path.join(workdir, 'config.json')) as f:
    if json.load(f)['model'].get('scan_layers'):
      params = scan.to_looped(params)
  return params, step


def best_or_latest_params(workdir: str) -> tuple[dict, int, str]:
  """(params as NumPy arrays, layers looped; their step; 'best' or 'latest') of a
  fine-tuning run: the params of its best evaluation (`<workdir>/best`, kept by
  evaluation/during_training.py) when it kept one, else its newest checkpoint's
  (verified against their digests)."""
  best = None
  if os.path.isdir(os.path.join(workdir, 'best')):  # (Opening it would create it.)
    best = best_checkpoint.BestCheckpoint(workdir)
  try:
    if best is None or best.step() is None:
      return (*latest_params(workdir), 'latest')
    step = best.step()
    params = scan.jax_to_numpy(best.restore_params(None))  # As saved: no target sharding.
  finally:
    if best is not None:
      best.close()
  with open(os.path.join(workdir, 'config.json')) as f:
    if json.load(f)['model'].get('scan_layers'):
      params = scan.to_looped(params)
  return params, step, 'best'


def load_params(pretrained: model_setup.Pretrained) -> dict:
  """The pretrained parameters as a nested dict of NumPy arrays (layers looped)."""
  if pretrained.kind == 'converted':
    return converted.load(pretrained.path).params
  return latest_params(pretrained.path)[0]


def load_run(workdir: str, family_name: str) -> Converted:
  """The newest checkpoint of run `workdir` as a `Converted` of family `family_name`
  (params only; the optimizer state stays behind), e.g. to export it. The family names
  the format to write: a `bert-*` preset trained with MLM is `bert`, `gpt2-*` with CLM
  `gpt2`, `t5-*` or `bart-*` with denoising `t5` or `bart`."""
  cfg, tokenizer_path = model_setup.run_model(workdir)
  params, step = latest_params(workdir)
  family = convert.get_family(family_name)
  models = {name: head.model(cfg) for name, head in family.heads.items()}
  heads = mapping.check_tree(mapping.flatten(params), models, family.stack)
  return Converted(
    family=family_name,
    config=cfg,
    params=params,
    heads=heads,
    source=f'{os.path.abspath(workdir)} step {step}',
    tokenizer_files=[tokenizer_path],
  )


def _flatten(tree, prefix=()) -> dict:
  if isinstance(tree, dict):
    out = {}
    for key, value in tree.items():
      out.update(_flatten(value, (*prefix, key)))
    return out
  return {prefix: tree}


def merge(fresh, pretrained: dict, shardings) -> tuple[dict, dict]:
  """`fresh` params with every leaf `pretrained` also holds replaced by the pretrained value.

  Args:
    fresh: the freshly initialized (sharded) params of the fine-tuned model.
    pretrained: nested dict of NumPy arrays (`load_params`).
    shardings: the NamedShardings of `fresh`, a matching tree.

  Returns:
    (params, report): the merged params, each leaf placed with its sharding, and
    {'loaded': [paths], 'fresh': [paths], 'unused': [paths of pretrained leaves not taken]}.

  Raises:
    ValueError: a shared path with a different shape, or no leaf in common at all.
  """
  source = {'/'.join(k): v for k, v in _flatten(pretrained).items()}
  loaded, kept = [], []

  def take(path, leaf, sharding):
    name = '/'.join(str(getattr(p, 'key', p)) for p in path)
    if name not in source:
      kept.append(name)
      return leaf
    value = source[name]
    if tuple(value.shape) != tuple(leaf.shape):
      raise ValueError(
        f'init_from: parameter {name} has shape {tuple(value.shape)} in the checkpoint but '
        f'{tuple(leaf.shape)} in this model; the model config must match the checkpoint.'
      )
    loaded.append(name)
    value = np.asarray(value, dtype=leaf.dtype)
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])

  params = jax.tree_util.tree_map_with_path(take, fresh, shardings)
  if not loaded:
    raise ValueError(
      'init_from: the checkpoint shares no parameter with this model (its top-level groups: '
      f'{sorted(pretrained)}; the model has {sorted(fresh)}).'
    )
  unused = sorted(set(source) - set(loaded))
  return params, {'loaded': loaded, 'fresh': kept, 'unused': unused}
