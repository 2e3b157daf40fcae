"""A run read for compression, and the run-like directory a compressed model is written to.

`read_run` takes a train.py run directory: its config.json, its tokenizer, and the params
of its best checkpoint (`<run>/best`, kept during fine-tuning) or else of its newest, as
NumPy arrays with the layers looped; the model config is the run's
(model_setup.run_model). `train_batches` reads batches of its train split through the
run's own experiment, for calibration, Hessians and head importance.

`write` makes OUT, which `eval.py --config <the run's config> --workdir OUT` evaluates as
it evaluates a run:

    OUT/model/        the compressed model in the converted-checkpoint format
                      (models/convert/converted.py): model.json (the whole
                      TransformerConfig, quant fields and layer_heads included, and a
                      digest of every tensor), params/ (Orbax: int8 / packed uint8
                      kernels, float scales, the rest float) and the tokenizer file;
    OUT/config.json   the run's config with init_from = OUT/model and
                      data.tokenizer_path = OUT/model/<tokenizer>, so the model eval.py
                      builds is the compressed one (checkpoint_eval's _fill_from_run);
    OUT/compress.json method, source run and step, settings, sizes, and what the method
                      measured (per-layer bits and eigenvalues, removed heads...).

There is no train state: evaluation restores the params only (`load_params`, placed as
the model's abstract params say), so no optimizer is ever initialized on int8 params.
OUT appears whole or not at all: it is written as OUT.tmp-XXXX and renamed.
"""

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from data.loader import ShardSpec
from models import quantization
from models.convert import converted
from training import experiment, model_setup, partitioning, pretrained
from training import state as state_lib

MODEL = 'model'
REPORT = 'compress.json'


@dataclasses.dataclass
class SourceRun:
  """A run to compress: its config, model and weights."""

  workdir: str
  config: ml_collections.ConfigDict  # Its config.json.
  model_cfg: object  # TransformerConfig, layers looped.
  params: dict  # Nested dict of NumPy arrays, layers looped.
  step: int
  checkpoint: str  # 'best' or 'latest'.
  tokenizer_path: str


def read_run(workdir: str, defaults: ml_collections.ConfigDict | None = None) -> SourceRun:
  """The config, model config and params (best, else newest) of train.py run `workdir`.

  Args:
    defaults: the current config's defaults (the entry point's configs/base.get_config()):
      a run outlives the code that wrote it, so the keys its config.json lacks (added
      since) take these values; without them the saved config is read as it is.

  Raises:
    FileNotFoundError: not a run directory, or one with no checkpoint.
  """
  workdir = os.path.abspath(workdir)
  if not model_setup.is_run(workdir):
    raise FileNotFoundError(
      f'--run {workdir} is not a train.py run directory (config.json and checkpoints/).'
    )
  with open(os.path.join(workdir, 'config.json')) as f:
    saved = json.load(f)
  config = ml_collections.ConfigDict(with_defaults(saved, defaults.to_dict() if defaults else {}))
  model_cfg, tokenizer_path = model_setup.run_model(workdir)
  params, step, checkpoint = pretrained.best_or_latest_params(workdir)
  return SourceRun(workdir, config, model_cfg, params, step, checkpoint, tokenizer_path)


def with_defaults(saved: dict, defaults: dict) -> dict:
  """`saved` with every key of `defaults` it lacks added, section by section."""
  merged = dict(defaults)
  for key, value in saved.items():
    if isinstance(value, dict) and isinstance(merged.get(key), dict):
      merged[key] = with_defaults(value, merged[key])
    else:
      merged[key] = value
  return merged


def build_experiment(source: SourceRun) -> experiment.Experiment:
  """The run's experiment (tokenizer, objective, data) from its own config."""
  return experiment.build(source.config, source.workdir)


def train_batches(exp: experiment.Experiment, count: int) -> list[dict]:
  """The first `count` batches of the run's train split (NumPy, one process reading all
  shards), as its training read them at its seed."""
  if count < 1:
    raise ValueError(f'{count} batches: at least one is needed.')
  config = exp.config
  shards = ShardSpec.create(config.batch_size, config.data.num_shards, 0, 1)
  loader = exp.loader('train', shards)
  return [next(loader) for _ in range(count)]


class _Recording:
  """The model, for an objective's loss_fn, with every `apply` also returning the
  calibration collection (kept in `collections`); other attributes are the model's."""

  def __init__(self, model):
    self._model, self.collections = model, []

  def apply(self, variables, *args, mutable=False, **kwargs):
    wanted = [mutable] if isinstance(mutable, str) else list(mutable or [])
    out, state = self._model.apply(
      variables, *args, mutable=[*wanted, quantization.CALIBRATION], **kwargs
    )
    state = dict(state)
    self.collections.append(state.pop(quantization.CALIBRATION, {}))
    return (out, state) if wanted else out

  def __getattr__(self, name):
    return getattr(self._model, name)


def calibrate(model, loss_fn, params, batches) -> dict[tuple, float]:
  """{projection module path: largest input magnitude} over `batches` (evaluation mode).

  Args:
    model: the float model (its Projections record their inputs' range when asked).
    loss_fn: the objective's `loss_fn(params, batch, rng, *, model)`: the model runs as
      training ran it, whatever inputs the objective gives it.
    params: the float params.
    batches: NumPy batches of the train split.
  """

  @jax.jit
  def ranges(p, batch):
    recording = _Recording(model)
    loss_fn(p, batch, None, model=recording)
    return recording.collections

  top = {}
  for batch in batches:
    for collection in ranges(params, batch):
      for path, value in quantization.flatten(collection).items():
        module = path[:-1]
        top[module] = max(top.get(module, 0.0), float(value))
  if not top:
    raise ValueError('Calibration recorded no projection input: does the model have blocks?')
  return top


def mean_loss(model, loss_fn, params, batches) -> float:
  """The objective's loss averaged over `batches` (evaluation mode)."""
  step = jax.jit(lambda p, batch: loss_fn(p, batch, None, model=model)[0])
  return float(np.mean([float(step(params, batch)) for batch in batches]))


def abstract_params(model, seq_len: int, mesh=None, rules=()):
  """(params as ShapeDtypeStructs, their NamedShardings or None without a mesh)."""

  def init(rng):
    return model.init(rng, *state_lib.init_inputs(model, seq_len))['params']

  with nn.logical_axis_rules(rules):
    boxed = jax.eval_shape(init, jax.random.key(0))
    shardings = None if mesh is None else partitioning.logical_shardings(boxed, mesh, rules)
  shapes = nn.unbox(boxed)
  if shardings is None:
    return shapes, None
  shapes = jax.tree.map(
    lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings
  )
  return shapes, shardings


def tree_bytes(tree) -> int:
  """Bytes of a tree's arrays (their raw size, in memory)."""
  return int(sum(np.asarray(x).nbytes for x in jax.tree.leaves(tree)))


def directory_bytes(path: str) -> int:
  """Bytes of the files under `path` (on disk, after Orbax's compression)."""
  return sum(
    os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(path) for name in names
  )


def source_disk_bytes(source: SourceRun) -> int:
  """Bytes on disk of the params the source was read from (`best/`, which holds its
  params alone; a regular checkpoint also holds the optimizer state, so its whole
  step directory is counted)."""
  if source.checkpoint == 'best':
    return directory_bytes(os.path.join(source.workdir, 'best'))
  return directory_bytes(os.path.join(source.workdir, 'checkpoints', str(source.step)))


def params_disk_bytes(workdir: str) -> int:
  """Bytes on disk of the params eval.py scores in `workdir`: a compressed run's model
  files, a run's best params (`best/`), else its newest checkpoint (optimizer included)."""
  if is_compressed(workdir):
    return directory_bytes(os.path.join(workdir, MODEL))
  if os.path.isdir(os.path.join(workdir, 'best')):
    return directory_bytes(os.path.join(workdir, 'best'))
  steps = [int(s) for s in os.listdir(os.path.join(workdir, 'checkpoints')) if s.isdigit()]
  return directory_bytes(os.path.join(workdir, 'checkpoints', str(max(steps))))


def is_compressed(workdir: str) -> bool:
  """Whether `workdir` is a directory `write` made."""
  return os.path.isfile(os.path.join(workdir, REPORT)) and os.path.isdir(
    os.path.join(workdir, MODEL)
  )


def read_report(workdir: str) -> dict:
  with open(os.path.join(workdir, REPORT)) as f:
    return json.load(f)


def write(
  out: str, source: SourceRun, model_cfg, params: dict, report: dict, overwrite: bool = False
) -> str:
  """Writes the compressed model and its run-like directory OUT (see the module docstring).

  Args:
    out: the directory to create.
    source: the run compressed.
    model_cfg: the compressed model's TransformerConfig.
    params: its params, a nested dict of NumPy arrays.
    report: what compress.json says beyond the source and sizes (method, settings...).
    overwrite: replace an existing OUT (else an existing OUT is an error).

  Returns:
    The absolute path of OUT; compress.json's content is `read_report(out)`.
  """
  out = os.path.abspath(out)
  if os.path.exists(out) and not overwrite:
    raise FileExistsError(f'--out {out} exists; pass --overwrite to replace it, or pick another.')
  parent = os.path.dirname(out)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=os.path.basename(out) + '.tmp-', dir=parent)
  try:
    tokenizer = os.path.basename(source.tokenizer_path)
    model_dir = os.path.join(tmp, MODEL)
    converted.save(
      model_dir,
      converted.Converted(
        family='compressed',
        config=model_cfg,
        params=params,
        heads=[],
        source=f'{source.workdir} step {source.step} ({source.checkpoint})',
        tokenizer_files=[tokenizer],
      ),
    )
    shutil.copyfile(source.tokenizer_path, os.path.join(model_dir, tokenizer))
    config = json.loads(source.config.to_json())
    config['init_from'] = os.path.join(out, MODEL)
    config['data']['tokenizer_path'] = os.path.join(out, MODEL, tokenizer)
    if 'quant' in config:
      config['quant']['bits'] = 0  # The model's own quantization is in model.json.
    with open(os.path.join(tmp, 'config.json'), 'w') as f:
      json.dump(config, f, indent=2)
    with open(source.tokenizer_path, 'rb') as f:
      tokenizer_sha256 = hashlib.sha256(f.read()).hexdigest()
    full = {
      **report,
      'source': {'run': source.workdir, 'step': source.step, 'checkpoint': source.checkpoint},
      'tokenizer': {'file': tokenizer, 'sha256': tokenizer_sha256},
      'sizes': {
        'source_param_bytes': tree_bytes(source.params),
        'param_bytes': tree_bytes(params),
        'source_disk_bytes': source_disk_bytes(source),
        'disk_bytes': directory_bytes(os.path.join(model_dir, converted.PARAMS)),
      },
    }
    with open(os.path.join(tmp, REPORT), 'w') as f:
      json.dump(full, f, indent=2)
      f.write('\n')
    if os.path.exists(out):
      old = tempfile.mkdtemp(prefix=os.path.basename(out) + '.old-', dir=parent)
      os.rename(out, os.path.join(old, 'replaced'))
      os.rename(tmp, out)
      shutil.rmtree(old)
    else:
      os.rename(tmp, out)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return out


def load_params(workdir: str, model, *, mesh, rules, seq_len: int, tokenizer_sha256: str):
  """The params of compressed directory `workdir`, placed on `mesh` as `model` (the
  model eval built from OUT/model) shards them.

  Args:
    workdir: a directory `write` made.
    model: the model evaluation built.
    mesh, rules: where and how its params are sharded.
    seq_len: of the model's example inputs.
    tokenizer_sha256: the fingerprint of the tokenizer evaluation loaded: it must be the
      one the model was trained with.

  Returns:
    (params, shardings, abstract params).

  Raises:
    ValueError: another tokenizer, params that are not the model's (another init_from),
      or damaged params (their digests, models/convert/converted.py).
  """
  saved_tokenizer = read_report(workdir)['tokenizer']
  if saved_tokenizer['sha256'] != tokenizer_sha256:
    raise ValueError(
      f'{workdir} holds a model trained with tokenizer {saved_tokenizer["file"]} (sha256 '
      f'{saved_tokenizer["sha256"][:12]}), but evaluation loads another (sha256 '
      f'{tokenizer_sha256[:12]}): leave data.tokenizer_path empty (it is filled from '
      f'{workdir}/config.json).'
    )
  abstract, shardings = abstract_params(model, seq_len, mesh, rules)
  saved = converted.load(os.path.join(workdir, MODEL)).params  # Digests checked.
  flat_saved = quantization.flatten(saved)
  flat_wanted = quantization.flatten(abstract)
  for path in sorted(set(flat_saved) | set(flat_wanted)):
    have, want = flat_saved.get(path), flat_wanted.get(path)
    if have is None or want is None or have.shape != want.shape or have.dtype != want.dtype:
      raise ValueError(
        f'{workdir}/{MODEL}: parameter {"/".join(path)} is '
        f'{_describe(have)} on disk but {_describe(want)} in the model evaluated: evaluate '
        f'with init_from={os.path.join(workdir, MODEL)} (left empty, it is filled from '
        f'{workdir}/config.json).'
      )

  def place(value, spec):
    value = np.asarray(value)
    return jax.make_array_from_callback(value.shape, spec.sharding, lambda index: value[index])

  params = jax.tree.map(place, saved, abstract)
  return params, shardings, abstract


def _describe(array) -> str:
  return 'absent' if array is None else f'{np.dtype(array.dtype).name}{list(array.shape)}'
