"""The model a config describes: its preset sized for the run, or the checkpoint it starts from.

`model_config(config, vocab_size)` is the model config of a run: `config.model.preset`
with the run's overrides, or, when fine-tuning (`config.init_from`), the config of the
checkpoint it starts from. `describe(path)` reads that checkpoint's model config and
tokenizer without its weights: a converted checkpoint (`python -m models.convert`:
model.json, params/, tokenizer files) or a train.py run directory (config.json,
checkpoints/, tokenizer/), whose model config is again `model_config` of its own config
(a fine-tuned run may itself start from a checkpoint, so the two call each other).

Imports nothing of the data stack (Grain, TFDS) or TensorFlow: benchmarks and
model-only tools use it on a bare accelerator machine.
"""

import dataclasses
import glob
import json
import os

import ml_collections

from data import tokenizers
from models import presets
from models.transformer import TransformerConfig
from objectives import distill


@dataclasses.dataclass
class Pretrained:
  """What a run needs to know about a checkpoint before loading its weights."""

  path: str
  kind: str  # 'converted' or 'run'.
  config: TransformerConfig
  tokenizer_path: str


def is_run(path: str) -> bool:
  """Whether `path` is a train.py run directory (config.json and checkpoints/)."""
  return os.path.isdir(os.path.join(path, 'checkpoints')) and os.path.exists(
    os.path.join(path, 'config.json')
  )


def describe(path: str) -> Pretrained:
  """The model config and tokenizer location of checkpoint `path` (no weights)."""
  path = os.path.abspath(path)
  if os.path.isfile(os.path.join(path, 'model.json')):
    with open(os.path.join(path, 'model.json')) as f:
      meta = json.load(f)
    fields = {f.name for f in dataclasses.fields(TransformerConfig)}
    # JSON has no tuples: per-layer fields (layer_heads, quant_layer_bits) come back as lists.
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in meta['config'].items()}
    config = TransformerConfig(**{k: v for k, v in values.items() if k in fields})
    vocab = [os.path.join(path, os.path.basename(p)) for p in meta['tokenizer_files']]
    vocab = [p for p in vocab if p.endswith(('.txt', '.model')) and os.path.isfile(p)]
    return Pretrained(path, 'converted', config, vocab[0] if vocab else '')
  if is_run(path):
    config, tokenizer_path = run_model(path)
    return Pretrained(path, 'run', config, tokenizer_path)
  raise FileNotFoundError(
    f'{path!r} is neither a converted checkpoint (model.json) nor a train.py run '
    '(config.json and checkpoints/).'
  )


def _run_tokenizer_file(workdir: str, config) -> str:
  kept = sorted(glob.glob(os.path.join(workdir, 'tokenizer', '*.model')))  # The trainer's copy.
  kept += sorted(glob.glob(os.path.join(workdir, 'tokenizer', '*.txt')))
  path = config.data.tokenizer_path or (kept[0] if kept else '')
  if not path or not os.path.exists(path):
    raise FileNotFoundError(f'{workdir}: no tokenizer in {workdir}/tokenizer.')
  return path


def run_model(workdir: str) -> tuple[TransformerConfig, str]:
  """(model config with looped layers, tokenizer path) of run `workdir`, without weights."""
  with open(os.path.join(workdir, 'config.json')) as f:
    config = ml_collections.ConfigDict(json.load(f))
  if 'init_from' not in config:  # A saved config of a run older than fine-tuning.
    config.init_from = ''
  tokenizer_path = _run_tokenizer_file(workdir, config)
  cfg = model_config(config, tokenizers.load_tokenizer(tokenizer_path).vocab_size)
  if getattr(cfg, 'scan_layers', False):
    cfg = cfg.replace(scan_layers=False, remat='none')  # Run params are read looped.
  return cfg, tokenizer_path


def model_config(config, vocab_size: int):
  """The preset named by `config.model.preset`, sized for the tokenizer and run.

  Returns the preset's config dataclass (a TransformerConfig, or the config of a
  family outside the Transformer such as ELMo), with the run's overrides.
  """
  cls = presets.config_class(config.model.preset)
  fields = {f.name for f in dataclasses.fields(cls)}
  overrides = dict(vocab_size=vocab_size, dtype=config.model.dtype)
  overrides.update(param_dtype=config.model.param_dtype)
  if 'attention_impl' in fields:
    overrides.update(attention_impl=config.model.attention_impl or None)
    overrides.update(scan_layers=config.model.scan_layers, remat=config.model.remat)
  elif config.model.scan_layers or config.model.remat != 'none':
    raise ValueError(
      f'config.model.scan_layers / remat apply to Transformer presets, not {config.model.preset!r}'
      f' ({cls.__name__}); leave them at false / none.'
    )
  sizes = ('num_layers', 'num_decoder_layers', 'd_model', 'num_heads', 'mlp_dim', 'embed_dim')
  sizes += ('adapter_dim', 'lora_rank', 'lora_alpha', 'lora_targets')
  sizes += ('prompt_length', 'prefix_length', 'max_2d_positions')
  for field in (*sizes, 'dropout_rate'):
    if field in config.model and config.model[field] is not None:
      if field not in fields:
        raise ValueError(
          f'config.model.{field}={config.model[field]} does not apply to preset '
          f'{config.model.preset!r} ({cls.__name__} has no field {field!r}).'
        )
      overrides[field] = config.model[field]
  if 'lora_targets' in overrides:  # 'query,value' -> ('query', 'value').
    targets = overrides['lora_targets']
    overrides['lora_targets'] = tuple(t.strip() for t in targets.split(',') if t.strip())
  if config.model.dropout_rate is not None and 'attention_dropout_rate' in fields:
    overrides.update(attention_dropout_rate=config.model.dropout_rate)
  if config.init_from:
    cfg = _fine_tuned_config(config, overrides)
  elif student_layers(config):
    cfg = _student_of_teacher(config, overrides)
  else:
    cfg = presets.get_config(config.model.preset, **overrides)
  if config.model.dropout_rate is not None and getattr(cfg, 'activation_dropout_rate', 0.0) > 0:
    cfg = dataclasses.replace(cfg, activation_dropout_rate=config.model.dropout_rate)  # T5, BART.
  cfg = _quantization_aware(config, cfg)
  max_positions = getattr(cfg, 'max_positions', None)
  if max_positions is not None and config.seq_len > max_positions:
    raise ValueError(
      f'seq_len={config.seq_len} exceeds the {max_positions} positions of preset '
      f'{config.model.preset!r}.'
    )
  return cfg


def tokenizer_source(config) -> str:
  """The checkpoint whose tokenizer the run must use ('' : none): the one it starts from
  (`init_from`), else its distillation teacher (student and teacher read the same ids)."""
  return config.init_from or config.teacher


def student_layers(config) -> tuple[int, ...]:
  """The teacher layers a distillation student is made of (`objective.distill.
  student_layers`; empty when the student is sized by its preset or init_from)."""
  spec = config.objective.distill.student_layers if config.teacher else ''
  return distill.parse_layers(spec, 'objective.distill.student_layers')


def teacher_config(config):
  """The model config of `config.teacher`, computed in the run's dtype, layers looped."""
  cfg = describe(config.teacher).config
  fields = dict(dtype=config.model.dtype, attention_impl=config.model.attention_impl or None)
  return dataclasses.replace(cfg, scan_layers=False, remat='none', **fields)


# The config.model keys that size a Transformer: a checkpoint (init_from) or a teacher sizes
# the model instead, and setting them too is an error.
SIZES = ('num_layers', 'd_model', 'num_heads', 'mlp_dim', 'embed_dim')


def continued_from(config, run: str):
  """A copy of `config` that starts from train.py run `run` (init_from), its sizes
  cleared so that the run's checkpoint sizes the model (tools/lifelong.py's stages,
  tools/self_paced.py's rounds)."""
  c = config.copy_and_resolve_references()
  c.init_from = run
  for size in SIZES:
    c.model[size] = None
  return c


def _student_of_teacher(config, overrides: dict):
  """DistilBERT's student: the teacher's architecture with `student_layers` of its layers
  (training/resume.py initializes them from those layers), the run's dtype and dropout."""
  if config.init_from:
    raise ValueError('Set objective.distill.student_layers or init_from, not both.')
  sizes = [k for k in SIZES if k in overrides]
  if sizes:
    raise ValueError(
      f'config.model.{sizes[0]} is set, but objective.distill.student_layers sizes the student '
      'from its teacher.'
    )
  layers = student_layers(config)
  cfg = describe(config.teacher).config
  if overrides['vocab_size'] != cfg.vocab_size:
    raise ValueError(
      f'The tokenizer has {overrides["vocab_size"]} pieces but teacher={config.teacher} has '
      f"{cfg.vocab_size} embeddings: leave data.tokenizer_path empty (the teacher's is used)."
    )
  if layers[-1] >= cfg.num_layers or min(layers) < 0:
    raise ValueError(
      f'objective.distill.student_layers={layers}: the teacher has layers 0..{cfg.num_layers - 1}.'
    )
  return dataclasses.replace(cfg, num_layers=len(layers), **overrides)


def _fine_tuned_config(config, overrides: dict):
  """The config of `init_from`'s model with the run's dtype, dropout and adapter overrides;
  its sizes are the checkpoint's (a size set in config.model is an error)."""
  cfg = describe(config.init_from).config
  sizes = [k for k in SIZES if k in overrides]
  if sizes:
    raise ValueError(
      f'config.model.{sizes[0]} is set, but the model is sized by init_from={config.init_from}.'
    )
  if overrides['vocab_size'] != cfg.vocab_size:
    raise ValueError(
      f'The tokenizer has {overrides["vocab_size"]} pieces but init_from={config.init_from} '
      f"has {cfg.vocab_size} embeddings: use the checkpoint's tokenizer (leave "
      'data.tokenizer_path empty).'
    )
  return dataclasses.replace(cfg, **overrides)


def _quantization_aware(config, cfg):
  """`config.quant.bits` > 0: quantization-aware training, every block matmul of the model
  fake-quantized to that many bits (TransformerConfig.quant='fake'). A saved config of a
  run older than the quant section trains in float."""
  bits = config.quant.bits if 'quant' in config else 0
  if not bits:
    return cfg
  if not isinstance(cfg, TransformerConfig):
    raise ValueError(
      f"config.quant.bits={bits} quantizes the Transformer's matmuls; preset "
      f'{config.model.preset!r} ({type(cfg).__name__}) has none: leave it at 0.'
    )
  if not 2 <= bits <= 8:
    raise ValueError(f'config.quant.bits={bits}: quantization-aware training takes 2 to 8 bits.')
  if cfg.quant not in ('', 'fake'):
    raise ValueError(
      f'config.quant.bits={bits}, but init_from={config.init_from} is already quantized '
      f'(quant={cfg.quant!r}): start quantization-aware training from the float model.'
    )
  return dataclasses.replace(cfg, quant='fake', quant_bits=bits)
