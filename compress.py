"""Compress a trained run: post-training quantization, Q-BERT mixed precision, head pruning.

  python compress.py quantize --run RUN --out OUT --method int8 [--calibration_batches 8]
  python compress.py quantize --run RUN --out OUT --method w8
  python compress.py quantize --run RUN --out OUT --method w4 [--group_size 64]
  python compress.py quantize --run RUN --out OUT --method qbert --bits 2,3,4,8 --budget 4 \\
      [--hessian_batches 2 --power_iterations 20]
  python compress.py prune-heads --run RUN --out OUT --fraction 0.3 [--importance_batches 8]
  python eval.py --config configs/glue.py:sst2 --workdir OUT

RUN is a train.py run directory; its best checkpoint (`RUN/best`) is compressed, else its
newest. OUT is a run-like directory (training/compressed_run.py): OUT/model (the
compressed model as a converted checkpoint), OUT/config.json (the run's config, its
init_from pointing at OUT/model) and OUT/compress.json (method, source, settings, sizes,
per-layer figures), written whole or not at all; an existing OUT is replaced only with
--overwrite. `eval.py` on OUT evaluates the compressed model as it evaluates a run.

Methods (the arithmetic is models/quantization.py; every matmul of the blocks, attention
query/key/value/out and MLP, is quantized, and the token embedding table becomes int8
rows with a scale each; position tables, norms, pooler and task head stay float):
  int8   int8 weights per output channel x int8 activations per tensor, the product
         summed in int32; activation scales calibrated on --calibration_batches batches of
         the run's train split (their largest magnitude).
  w8/w4  weight-only: 8- or 4-bit weights (4-bit packed two per byte) with a scale per
         output channel and per group of --group_size input rows, dequantized in the matmul.
  qbert  Q-BERT (Shen et al. 2020): each layer's top Hessian eigenvalue (power iteration
         on Hessian-vector products over --hessian_batches batches; sensitivity |mean| +
         std), then bits per layer from --bits under --budget, the average bits per
         weight of the quantized matrices; weight-only, groups of --group_size rows
         (default: the head size, Q-BERT's groups per head).
Quantization-aware fine-tuning is train.py's `--config.quant.bits=8`; compress its run
with --method int8 afterwards. prune-heads removes the --fraction least important heads
(Michel et al. 2019; models/head_pruning.py, training/head_importance.py).
"""

import dataclasses

import jax
import numpy as np
from absl import app, flags

from configs import base
from models import head_pruning, quantization
from training import compressed_run, head_importance, hessian, launch, model_setup

_RUN = flags.DEFINE_string('run', None, 'The train.py run directory to compress.')
_OUT = flags.DEFINE_string('out', None, 'The directory to write (must not exist).')
_OVERWRITE = flags.DEFINE_bool('overwrite', False, 'Replace an existing --out.')
_METHOD = flags.DEFINE_enum('method', 'int8', ['int8', 'w8', 'w4', 'qbert'], 'quantize: how.')
_CALIBRATION = flags.DEFINE_integer(
  'calibration_batches', 8, 'Train batches for calibration and the reported losses.'
)
_GROUP = flags.DEFINE_integer(
  'group_size', -1, 'Input rows per weight scale (0: per output channel; -1: per channel for '
  'int8 and w8, the head size for w4 and qbert).',
)  # fmt: skip
_BITS = flags.DEFINE_string('bits', '2,3,4,8', 'qbert: the bit widths layers may get.')
_BUDGET = flags.DEFINE_float('budget', 4.0, 'qbert: average bits per quantized weight, at most.')
_HESSIAN = flags.DEFINE_integer('hessian_batches', 2, 'qbert: batches for the eigenvalues.')
_POWER = flags.DEFINE_integer('power_iterations', 20, 'qbert: power iterations per layer/batch.')
_FRACTION = flags.DEFINE_float('fraction', 0.3, 'prune-heads: fraction of all heads to remove.')
_IMPORTANCE = flags.DEFINE_integer('importance_batches', 8, 'prune-heads: batches for importance.')

COMMANDS = ('quantize', 'prune-heads')


@dataclasses.dataclass
class _Setup:
  source: compressed_run.SourceRun
  exp: object
  model: object  # The source (float) model.
  batches: list


def _setup(batches: int) -> _Setup:
  source = compressed_run.read_run(_RUN.value, base.get_config())
  print(f'{source.workdir}: {source.checkpoint} checkpoint, step {source.step}')
  exp = compressed_run.build_experiment(source)
  model = exp.objective.build_model(source.model_cfg)
  return _Setup(source, exp, model, compressed_run.train_batches(exp, batches))


def _loss(setup: _Setup, model, params) -> float:
  return compressed_run.mean_loss(model, setup.exp.objective.loss_fn, params, setup.batches)


def _target(setup: _Setup, cfg):
  """The compressed model and its params' ShapeDtypeStructs."""
  model = setup.exp.objective.build_model(cfg)
  return model, compressed_run.abstract_params(model, setup.exp.config.seq_len)[0]


def _group_size(method: str, cfg) -> int:
  if _GROUP.value >= 0:
    if method == 'int8' and _GROUP.value:
      raise app.UsageError('--method int8 has one scale per output channel: --group_size 0.')
    return _GROUP.value
  return cfg.kv_dim if method in ('w4', 'qbert') else 0


def quantize() -> dict:
  setup = _setup(_CALIBRATION.value)
  source, method = setup.source, _METHOD.value
  cfg = source.model_cfg
  if cfg.quant not in ('', 'fake'):
    raise ValueError(f'{source.workdir} is already quantized (quant={cfg.quant!r}).')
  group = _group_size(method, cfg)
  settings = {'method': method, 'group_size': group, 'calibration_batches': _CALIBRATION.value}
  input_max, layers = None, None
  if method == 'int8':
    input_max = compressed_run.calibrate(
      setup.model, setup.exp.objective.loss_fn, source.params, setup.batches
    )
    cfg = dataclasses.replace(cfg, quant='int8', quant_bits=8, quant_group_size=0)
  elif method in ('w8', 'w4'):
    cfg = dataclasses.replace(
      cfg, quant='weight', quant_bits=int(method[1]), quant_group_size=group
    )
  else:
    cfg, layers = _qbert(setup, cfg, group)
    settings.update(
      bits=_BITS.value, budget=_BUDGET.value, hessian_batches=_HESSIAN.value,
      power_iterations=_POWER.value,
    )  # fmt: skip
  model, target = _target(setup, cfg)
  params = quantization.quantize_tree(
    source.params, target, lambda module: cfg.quant_bits_of(quantization.layer_of(module)),
    input_max,
  )  # fmt: skip
  losses = {'float': _loss(setup, setup.model, source.params), method: _loss(setup, model, params)}
  report = {**settings, 'train_loss': losses, 'layers': layers}
  return _finish(setup, cfg, params, report)


def _bit_choices(text: str) -> tuple[int, ...]:
  try:
    choices = tuple(sorted({int(b) for b in text.split(',')}))
  except ValueError:
    raise app.UsageError(f'--bits={text}: expected bit widths such as 2,3,4,8.') from None
  if not choices or choices[0] < 2 or choices[-1] > 8:
    raise app.UsageError(f'--bits={text}: widths go from 2 to 8.')
  return choices


def _layers_of(target: dict, num_layers: int) -> dict[int, list[tuple]]:
  """{layer: module paths of its quantized projections}: one looped stack's layers."""
  projections = quantization.projection_paths(target)
  by_layer = {}
  for module in projections:
    layer = quantization.layer_of(module)
    if layer is None or module[0] != projections[0][0]:
      raise ValueError(
        f'qbert gives bits per layer of one looped stack; {"/".join(module)} is outside it.'
      )
    by_layer.setdefault(layer, []).append(module)
  if sorted(by_layer) != list(range(num_layers)):
    raise ValueError(f'qbert found projections of layers {sorted(by_layer)} of {num_layers}.')
  return dict(sorted(by_layer.items()))


def _qbert(setup: _Setup, cfg, group: int):
  """Q-BERT: each layer's top Hessian eigenvalues, then its bits; returns the quantized
  config and the per-layer table (printed and kept in compress.json)."""
  choices = _bit_choices(_BITS.value)
  uniform = dataclasses.replace(cfg, quant='weight', quant_bits=8, quant_group_size=group)
  _, target = _target(setup, uniform)
  by_layer = _layers_of(target, cfg.num_layers)
  params = jax.tree.map(np.asarray, setup.source.params)
  flat, scales = quantization.flatten(params), quantization.flatten(target)
  kernels = {m: flat[(*m, 'kernel')] for modules in by_layer.values() for m in modules}
  # Input axes of each kernel: its axes less the output axes of its scales.
  n_in = {m: k.ndim - scales[(*m, 'kernel_scale')].ndim + 1 for m, k in kernels.items()}
  blocks = {
    str(layer): quantization.unflatten({p: p[:-1] in modules and p[-1] == 'kernel' for p in flat})
    for layer, modules in by_layer.items()
  }
  batches = setup.batches[: _HESSIAN.value]
  if len(batches) < _HESSIAN.value:
    batches = compressed_run.train_batches(setup.exp, _HESSIAN.value)
  loss_fn, model = setup.exp.objective.loss_fn, setup.model
  eigen = hessian.block_eigenvalues(
    lambda p, batch: loss_fn(p, batch, None, model=model)[0],
    params, batches, blocks, iterations=_POWER.value,
  )  # fmt: skip
  sizes = [sum(kernels[m].size for m in modules) for modules in by_layer.values()]
  errors = [
    {b: sum(quantization.quantization_error(kernels[m], n_in[m], b, group) for m in modules)
     for b in choices}
    for modules in by_layer.values()
  ]  # fmt: skip
  sensitivity = [hessian.sensitivity(eigen[str(layer)]) for layer in by_layer]
  bits = quantization.assign_bits(sensitivity, sizes, errors, choices, _BUDGET.value)
  table = []
  print(f'{"layer":>5} {"top eigenvalue per batch":>36} {"sensitivity":>12} {"bits":>5}')
  for i, layer in enumerate(by_layer):
    values = eigen[str(layer)]
    print(f'{layer:>5} {" ".join(f"{v:.4g}" for v in values):>36} {sensitivity[i]:>12.4g} '
          f'{bits[i]:>5}')  # fmt: skip
    table.append(
      dict(layer=layer, eigenvalues=values, sensitivity=sensitivity[i], bits=bits[i],
           weights=sizes[i])
    )  # fmt: skip
  average = sum(b * n for b, n in zip(bits, sizes, strict=True)) / sum(sizes)
  print(f'average bits per weight {average:.3f} (budget {_BUDGET.value})')
  return dataclasses.replace(uniform, quant_layer_bits=tuple(bits)), table


def prune_heads() -> dict:
  setup = _setup(_IMPORTANCE.value)
  source = setup.source
  loss_fn = setup.exp.objective.loss_fn
  importance = head_importance.head_importance(setup.model, source.params, setup.batches, loss_fn)
  prune = head_pruning.choose_heads(importance, _FRACTION.value)
  pruned, cfg = head_pruning.remove_heads(source.params, source.model_cfg, prune)
  model, target = _target(setup, cfg)
  params = quantization.quantize_tree(pruned, target, lambda module: 8)  # Checks the shapes.
  print(f'{"layer":>5} {"importance per head":>40} removed')
  for layer, row in enumerate(importance):
    removed = sorted(prune.get(layer, []))
    print(f'{layer:>5} {" ".join(f"{v:.3g}" for v in row):>40} {removed}')
  report = {
    'method': 'prune-heads',
    'fraction': _FRACTION.value,
    'importance_batches': _IMPORTANCE.value,
    'importance': np.where(np.isnan(importance), None, importance).tolist(),
    'removed_heads': {str(k): sorted(int(h) for h in v) for k, v in prune.items()},
    'layer_heads': list(cfg.layer_heads),
    'train_loss': {
      'float': _loss(setup, setup.model, source.params),
      'pruned': _loss(setup, model, params),
    },
  }
  return _finish(setup, cfg, params, report)


def _finish(setup: _Setup, cfg, params, report: dict) -> dict:
  out = compressed_run.write(_OUT.value, setup.source, cfg, params, report, _OVERWRITE.value)
  report = compressed_run.read_report(out)
  sizes = report['sizes']
  print(
    f'{out}: params {sizes["param_bytes"]:,} bytes (source {sizes["source_param_bytes"]:,}); '
    f'on disk {sizes["disk_bytes"]:,} (source {sizes["source_disk_bytes"]:,}); train loss '
    + ', '.join(f'{k} {v:.4f}' for k, v in report['train_loss'].items())
  )
  print(f"evaluate: python eval.py --config <the run's config> --workdir {out}")
  return report


def main(argv):
  if len(argv) != 2 or argv[1] not in COMMANDS:
    raise app.UsageError(f'Usage: compress.py {{{"|".join(COMMANDS)}}} --run RUN --out OUT ...')
  if not _RUN.value or not _OUT.value:
    raise app.UsageError('Pass --run (a train.py run directory) and --out.')
  if not model_setup.is_run(_RUN.value):
    raise app.UsageError(
      f'--run {_RUN.value} is not a train.py run directory (config.json and checkpoints/).'
    )
  launch.route_logs(_RUN.value, 'compress')  # Library logs to RUN/logs, as eval.py's.
  if argv[1] == 'quantize':
    quantize()
  else:
    prune_heads()


if __name__ == '__main__':
  app.run(main)
