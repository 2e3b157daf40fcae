"""Ahead-of-time plans for pods: a config's real train step compiled on this host for a TPU
slice, with its memory per chip against the chip's HBM.

  python -m training.plan --config configs/plan/gpt3_175b.py --topology v5p-1024
  python -m training.plan --config configs/paper/gpt2_small.py --topology v5e-8 --json \\
    --config.mesh.fsdp=8 --config.mesh.data=1 --config.model.remat=full

The step is the one train.py runs: the objective's model of the config's preset and
overrides (dtype, remat, scanned layers), the optimizer of training/optimizers.py, the
mesh and logical-axis rules of training/partitioning.py, `state.jit_train_step` with its
explicit shardings. Its inputs are `jax.ShapeDtypeStruct`s carrying those shardings, so
no parameter is ever allocated; the batch's arrays are those the objective's own
preprocessing makes from two packed rows of random words (a synthetic WordPiece
vocabulary of the model's size), widened to `batch_size` rows; no data or tokenizer
file is read. The vocabulary size is the run's (`vocab_size`), or `--vocab_size`.

The slice's devices come from libtpu (`pip install -r requirements-plan.txt`), which
describes any TPU topology to the TPU compiler on a CPU host; without it (or with
`--backend=cpu`) the same mesh is built from as many CPU devices and compiled by XLA's
CPU backend, an estimate of the TPU's figures (training/topology.py). The plan prints,
per chip, the argument, output and temporary bytes XLA's buffer assignment reports,
their total (arguments + outputs - donated aliases + temporaries + code) against the
chip's HBM, whether it fits, the FLOPs of a step (models/flops.py's count, the MFU
numerator; and XLA's count of the compiled program, recomputation included, when the step
has no loop: XLA counts a loop's body once, so scanned layers or microbatches leave it
out), and the mesh and strategy. It exits 1 with the same figures when the step does not
fit, whether by its figures or because the TPU compiler refused it as too big for HBM.
"""

import dataclasses
import json
import math
import os
import re
import sys
import tempfile
import time

import jax
import numpy as np
from absl import flags
from ml_collections import config_flags

from data import loader as loader_lib
from data import tasks, tokenizers, wordpiece
from models import presets
from objectives import api
from training import experiment, harness, model_setup, optimizers, partitioning, topology
from training import state as state_lib

BACKENDS = ('auto', 'tpu', 'cpu')
_EXAMPLE_ROWS = 2  # Rows run through the objective's preprocessing to learn the batch's arrays.
_SPECIALS = (*wordpiece.SPECIAL_TOKENS.values(), '.')  # The synthetic vocabulary's first pieces.


def vocab_size(config, override: int = 0) -> int:
  """The vocabulary the run would have: `override`; else `init_from`'s checkpoint's; else
  that of `data.tokenizer_path` (the preset's when the file is not on this host, as a
  released vocabulary is the preset's); else `data.vocab_size`, the SentencePiece model
  train.py trains."""
  if override:
    return override
  if config.init_from:
    return model_setup.describe(config.init_from).config.vocab_size
  if config.data.tokenizer_path:
    if os.path.exists(config.data.tokenizer_path):
      return tokenizers.load_tokenizer(config.data.tokenizer_path).vocab_size
    return presets.get_config(config.model.preset).vocab_size
  return config.data.vocab_size


def synthetic_tokenizer(size: int, directory: str) -> wordpiece.WordPieceTokenizer:
  """A WordPiece tokenizer of `size` pieces: the special tokens, '.', then words w<i>."""
  if size <= len(_SPECIALS):
    raise ValueError(
      f'vocab_size={size} is too small for a plan; it needs more than {len(_SPECIALS)}.'
    )
  path = os.path.join(directory, 'vocab.txt')
  with open(path, 'w') as f:
    f.write('\n'.join([*_SPECIALS, *(f'w{i}' for i in range(size - len(_SPECIALS)))]) + '\n')
  return wordpiece.WordPieceTokenizer(path)


@dataclasses.dataclass
class _SyntheticText(experiment.Experiment):
  """An experiment whose documents are random words of its vocabulary."""

  texts: list[str] = dataclasses.field(default_factory=list)

  def documents(self, split: str, eval_split: str | None = None):
    del split, eval_split
    return self.texts


def example_batch(config, objective, tokenizer, model_cfg) -> dict:
  """A host batch of `_EXAMPLE_ROWS` rows, as the loader and the objective make them."""
  if config.data.source in tasks.SOURCES:
    raise ValueError(
      f'data.source={config.data.source!r} is a fine-tuning task, whose rows come from its '
      'records; plans cover pretraining configs (their rows are packed text).'
    )
  length = api.packed_length(objective, config.objective, config.seq_len)
  rng = np.random.default_rng(config.seed)
  words = tokenizer.vocab_size - len(_SPECIALS)  # The ordinary pieces w0, w1, ...
  texts = []
  for _ in range(8):  # Documents of a whole row or more: lines of two 20-word sentences,
    # tab-separated, as parallel text is (XLM); whitespace to every other objective.
    ids = rng.integers(0, words, size=(max(length // 20, 1), 2, 20))
    lines = ('\t'.join(' '.join(f'w{i}' for i in s) + '.' for s in pair) for pair in ids)
    texts.append('\n'.join(lines))
  exp = _SyntheticText(config, tokenizer, objective, model_cfg, texts=texts)
  shards = loader_lib.ShardSpec.create(_EXAMPLE_ROWS, 1, 0, 1)
  return next(iter(exp.loader('train', shards)))


def batch_structs(host_batch: dict, batch_size: int, sharding) -> dict:
  """ShapeDtypeStructs of the global batch: each array with `batch_size` leading rows."""
  return {
    k: jax.ShapeDtypeStruct(
      (batch_size, *np.shape(v)[1:]), jax.dtypes.canonicalize_dtype(v.dtype), sharding=sharding
    )
    for k, v in host_batch.items()
  }


def _memory(compiled) -> dict:
  """Per-device bytes of XLA's buffer assignment, and their total."""
  stats = compiled.memory_analysis()
  if stats is None:
    raise RuntimeError('This backend reports no memory analysis of the compiled step.')
  figures = dict(
    argument_bytes=int(stats.argument_size_in_bytes),
    output_bytes=int(stats.output_size_in_bytes),
    alias_bytes=int(stats.alias_size_in_bytes),  # Outputs written over donated arguments.
    temp_bytes=int(stats.temp_size_in_bytes),
    code_bytes=int(stats.generated_code_size_in_bytes),
    compiler_message=None,
  )
  figures['bytes_per_device'] = (
    figures['argument_bytes']
    + figures['output_bytes']
    - figures['alias_bytes']
    + figures['temp_bytes']
    + figures['code_bytes']
  )
  return figures


# The TPU compiler refuses a step that outgrows a chip's HBM and says by how much ('G': GiB):
# "... the total memory required for HLO temporaries (129.46G) exceeds available HBM
# (95.74G)", or "Used 20.51G of 15.48G hbm. Exceeded hbm capacity by 5.03G."
_TEMPORARIES_OVER = re.compile(r'HLO temporaries \(([\d.]+)([KMGT])\) exceeds available HBM')
_USED_OVER = re.compile(r'Used ([\d.]+)([KMGT]) of [\d.]+[KMGT] hbm')
_UNITS = {'K': 2**10, 'M': 2**20, 'G': 2**30, 'T': 2**40}


def per_device_bytes(structs) -> int:
  """Bytes one device holds of a tree of sharded ShapeDtypeStructs."""
  return sum(
    math.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(structs)
  )


def memory_of_refusal(message: str, argument_bytes: int) -> dict | None:
  """The figures of a step the TPU compiler refused as too big, from its message (None
  when the message is not that)."""
  if 'RESOURCE_EXHAUSTED' not in message:
    return None
  figures = dict(
    argument_bytes=argument_bytes, output_bytes=None, alias_bytes=None, code_bytes=None
  )
  if match := _TEMPORARIES_OVER.search(message):
    figures['temp_bytes'] = int(float(match.group(1)) * _UNITS[match.group(2)])
    figures['bytes_per_device'] = argument_bytes + figures['temp_bytes']
  elif match := _USED_OVER.search(message):
    figures['bytes_per_device'] = int(float(match.group(1)) * _UNITS[match.group(2)])
    figures['temp_bytes'] = figures['bytes_per_device'] - argument_bytes
  else:
    return None
  figures['compiler_message'] = message.strip().splitlines()[0]
  return figures


def _xla_flops(compiled) -> float:
  """FLOPs of one device's program, as XLA counts them (0 when it does not)."""
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  return float((cost or {}).get('flops', 0.0))


def plan(config, slice_name: str, *, backend: str = 'auto', vocab: int = 0) -> dict:
  """Compiles `config`'s train step for the TPU slice `slice_name` and measures it.

  Args:
    config: the experiment config (configs/base.py keys); its mesh must cover the slice.
    slice_name: 'v5p-1024', 'v5e-256', 'v4-128' or a grid 'v5p:4x4x8'.
    backend: 'tpu' (libtpu's compile-only devices), 'cpu' (as many CPU devices) or
      'auto' (tpu when libtpu is installed).
    vocab: the vocabulary size; 0 takes the run's (see `vocab_size`).

  Returns:
    The plan's figures (a JSON-able dict; `fits`, `bytes_per_device`,
    `hbm_bytes_per_device`, `flops_per_step`, `mesh`, ...).

  Raises:
    ValueError: an unknown slice or backend, a mesh or batch that does not fit the
      slice, a fine-tuning config, or `backend='tpu'` without libtpu.
  """
  tpu = topology.parse(slice_name)
  libtpu = topology.libtpu_version()
  if backend not in BACKENDS:
    raise ValueError(f'Unknown backend {backend!r}; expected one of {", ".join(BACKENDS)}.')
  if backend == 'auto':
    backend = 'tpu' if libtpu else 'cpu'
  if backend == 'tpu' and not libtpu:
    raise ValueError('backend=tpu needs libtpu: pip install -r requirements-plan.txt.')
  devices = topology.tpu_devices(tpu) if backend == 'tpu' else topology.cpu_devices(tpu.num_chips)

  objective = api.load(config.objective.module, config.objective)
  size = vocab_size(config, vocab)
  model_cfg = model_setup.model_config(config, size)
  model = objective.build_model(model_cfg)
  tx = optimizers.build(config.optimizer, config.total_steps)
  mesh = partitioning.make_mesh(config.mesh, devices)
  rules = partitioning.logical_rules(config.mesh.strategy)
  partitioning.check_batch(config.batch_size, mesh)
  options = harness.step_options(config, objective)
  if options.get('num_microbatches', 1) != 1:
    harness.check_microbatches(config.batch_size, options['num_microbatches'], mesh)
  with tempfile.TemporaryDirectory() as directory:
    host_batch = example_batch(config, objective, synthetic_tokenizer(size, directory), model_cfg)
  batch = batch_structs(host_batch, config.batch_size, partitioning.batch_sharding(mesh))

  start = time.perf_counter()
  state, shardings = state_lib.abstract_state(
    model, tx, mesh=mesh, rules=rules, seq_len=config.seq_len
  )
  step = state_lib.jit_train_step(
    shardings,
    partitioning.batch_sharding(mesh),
    mesh=mesh,
    rules=rules,
    model=model,
    loss_fn=harness.train_loss(config, objective),
    tx=tx,
    seed=config.seed,
    **options,
  )
  lowered = step.lower(state, batch)
  lowered_at = time.perf_counter()
  try:
    compiled = lowered.compile()
    memory = _memory(compiled)
  except jax.errors.JaxRuntimeError as e:  # Too big for HBM: the TPU compiler says so.
    compiled, memory = None, memory_of_refusal(str(e), per_device_bytes((state, batch)))
    if memory is None:
      raise
  compiled_at = time.perf_counter()
  looped = config.model.scan_layers or options.get('num_microbatches', 1) > 1
  # Encoder rows per batch row: T for a [batch, T, length] batch (NER as MRC's queries,
  # an episode's records), 1 for most; the trainer counts its tokens the same way.
  sub_rows = math.prod(host_batch['inputs'].shape[1:-1])
  tokens = config.batch_size * sub_rows * config.seq_len
  model_flops = tokens * api.flops_per_token(
    objective, config.objective, model, model_cfg, config.seq_len
  )
  params = sum(math.prod(x.shape) for x in jax.tree.leaves(state.params))
  return {
    'preset': config.model.preset,
    'objective': config.objective.module,
    'topology': slice_name,
    'libtpu_topology': tpu.libtpu_topology,
    'chip': tpu.chip.name,
    'num_devices': tpu.num_chips,
    'backend': backend,
    'libtpu': libtpu,
    'device_kind': devices[0].device_kind,
    'mesh': {axis: int(n) for axis, n in mesh.shape.items()},
    'strategy': config.mesh.strategy,
    'params': int(params),
    'vocab_size': size,
    'batch_size': config.batch_size,
    'seq_len': config.seq_len,
    'dtype': config.model.dtype,
    'param_dtype': config.model.param_dtype,
    'remat': config.model.remat,
    'scan_layers': config.model.scan_layers,
    'optimizer': config.optimizer.get('name', 'adamw'),
    'num_microbatches': options.get('num_microbatches', 1),
    **memory,
    'hbm_bytes_per_device': tpu.chip.hbm_bytes,
    'fits': memory['bytes_per_device'] <= tpu.chip.hbm_bytes,
    'flops_per_step': model_flops,
    'xla_flops_per_step': None
    if looped or compiled is None
    else _xla_flops(compiled) * tpu.num_chips,
    'peak_flops_per_device': tpu.chip.peak_flops,
    'ideal_step_seconds': model_flops / (tpu.chip.peak_flops * tpu.num_chips),
    'lower_seconds': round(lowered_at - start, 2),
    'compile_seconds': round(compiled_at - lowered_at, 2),
  }


def _gib(n: float) -> str:
  return f'{n / 2**30:.2f} GiB'


def _count(n: float) -> str:
  return f'{n / 1e9:.2f}B' if n >= 1e9 else f'{n / 1e6:.1f}M'


def report(result: dict) -> str:
  """The plan as lines for a terminal."""
  r = result
  mesh = ' '.join(f'{axis}={n}' for axis, n in r['mesh'].items())
  source = f'libtpu {r["libtpu"]}' if r['backend'] == 'tpu' else 'CPU stand-in, XLA:CPU figures'
  layers = ', scanned layers' if r['scan_layers'] else ''
  compiled = 'XLA does not count loops whole'
  if r['compiler_message']:
    compiled = 'none compiled'
    memory = (
      f'per chip: arguments {_gib(r["argument_bytes"])}, temporaries {_gib(r["temp_bytes"])}; '
      f'the TPU compiler refused the step: {r["compiler_message"]}'
    )
  else:
    memory = (
      f'per chip: arguments {_gib(r["argument_bytes"])}, outputs {_gib(r["output_bytes"])} '
      f'({_gib(r["alias_bytes"])} of them over donated arguments), temporaries '
      f'{_gib(r["temp_bytes"])}, code {_gib(r["code_bytes"])}'
    )
  if r['xla_flops_per_step'] is not None:
    compiled = f'{r["xla_flops_per_step"]:.3e} compiled (XLA, recomputation included)'
  return '\n'.join(
    [
      f'plan: {r["preset"]} ({_count(r["params"])} params, {r["objective"]}) on '
      f'{r["topology"]} = {r["libtpu_topology"]}, {r["num_devices"]} chips of {r["device_kind"]} '
      f'({source})',
      f'step: batch {r["batch_size"]} x {r["seq_len"]} tokens, {r["dtype"]} compute, '
      f'{r["param_dtype"]} params, {r["optimizer"]}, remat {r["remat"]}{layers}, '
      f'{r["num_microbatches"]} microbatch(es)',
      f'mesh: {mesh}, strategy {r["strategy"]}',
      memory,
      f'total {_gib(r["bytes_per_device"])} of {_gib(r["hbm_bytes_per_device"])} HBM '
      f'({100 * r["bytes_per_device"] / r["hbm_bytes_per_device"]:.0f}%): '
      + ('fits' if r['fits'] else 'DOES NOT FIT'),
      f'FLOPs per step: {r["flops_per_step"]:.3e} (models/flops.py), {compiled}; at the '
      f"chips' peak {r['peak_flops_per_device'] / 1e12:.0f} TFLOP/s: "
      f'{r["ideal_step_seconds"]:.2f} s a step',
      f'compile: lowering {r["lower_seconds"]:.1f} s, compiling {r["compile_seconds"]:.1f} s',
    ]
  )


def parse_args(argv: list[str]):
  """(config, options) from the command line (private flags, so importing this module
  defines none)."""
  values = flags.FlagValues()
  config_flags.DEFINE_config_file(
    'config', None, 'Experiment config file.', flag_values=values, sys_argv=argv
  )
  flags.DEFINE_string(
    'topology', None, 'TPU slice: v5p-1024, v5e-256, v4-128, v5p:4x4x8.', flag_values=values
  )
  flags.DEFINE_bool('json', False, 'Print the plan as one JSON object.', flag_values=values)
  flags.DEFINE_enum(
    'backend', 'auto', BACKENDS, 'tpu: libtpu; cpu: CPU stand-in.', flag_values=values
  )
  flags.DEFINE_integer('vocab_size', 0, "Vocabulary size; 0: the run's.", flag_values=values)
  flags.mark_flags_as_required(['config', 'topology'], flag_values=values)
  try:
    rest = values(argv)[1:]
  except flags.Error as e:
    raise SystemExit(f'training.plan: {e}') from e
  if rest:
    raise SystemExit(f'training.plan: unexpected arguments {rest}.')
  return values.config, values


def main(argv: list[str]) -> int:
  """Prints the plan; returns 0 when the step fits the chips' HBM, 1 when it does not."""
  config, options = parse_args(argv)
  backend = options.backend
  if backend == 'auto':
    backend = 'tpu' if topology.libtpu_version() else 'cpu'
  # The step is compiled, never run: a TPU of this host (if any) is not used, and the CPU
  # stand-in needs one CPU device per chip, asked for before JAX starts its backends.
  jax.config.update('jax_platforms', 'cpu')
  if backend == 'cpu':
    topology.request_cpu_devices(topology.parse(options.topology).num_chips)
  result = plan(config, options.topology, backend=backend, vocab=options.vocab_size)
  print(json.dumps(result, indent=1) if options.json else report(result))
  return 0 if result['fits'] else 1


if __name__ == '__main__':
  sys.exit(main(sys.argv))
