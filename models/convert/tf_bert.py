"""Original google-research/bert TensorFlow checkpoints, mapped onto the HF BERT names.

A release directory holds `bert_config.json` (the same keys as transformers'
BertConfig), `vocab.txt` and a TF1 checkpoint (`bert_model.ckpt.index`,
`.data-*`). Variables are named like 'bert/encoder/layer_0/attention/self/
query/kernel' ([in, out]) and 'cls/predictions/output_bias'; they are renamed
to transformers' names ('bert.encoder.layer.0.attention.self.query.weight',
[out, in]) and then converted exactly like a Hugging Face BERT checkpoint.
Optimizer slots (adam_m, adam_v) and global_step are training state: they are
listed under 'ignored'. TensorFlow is imported only here, when needed.
"""

import glob
import json
import os
import re

import numpy as np

from models.convert import checkpoint_io, converted, hf
from models.convert.converted import Converted

CONFIG = 'bert_config.json'
_TRAINING_STATE = re.compile(r'global_step|.*/adam_[mv]|.*/Adam(_\d+)?')
# Last name component -> (transformers suffix, transposed).
_LEAVES = {
  'kernel': ('weight', True),
  'gamma': ('weight', False),
  'beta': ('bias', False),
  'bias': ('bias', False),
  'output_weights': ('weight', False),  # cls/seq_relationship: already [out, in].
  'output_bias': ('bias', False),
}


def hf_name(tf_name: str) -> tuple[str, bool]:
  """('bert.encoder.layer.0.output.dense.weight', transposed) of a TF variable name."""
  *parents, leaf = re.sub(r'layer_(\d+)', r'layer.\1', tf_name).split('/')
  if leaf in _LEAVES:
    suffix, transposed = _LEAVES[leaf]
    return '.'.join([*parents, suffix]), transposed
  if leaf.endswith('_embeddings'):
    return '.'.join([*parents, leaf, 'weight']), False
  return '.'.join([*parents, leaf]), False  # No rule takes it: listed as unconverted.


def find_checkpoint(src: str) -> str:
  """The checkpoint prefix in directory `src` (or `src` itself when it is a prefix)."""
  if os.path.isfile(src + '.index'):
    return src
  indexes = sorted(glob.glob(os.path.join(src, '*.index')))
  if len(indexes) != 1:
    raise FileNotFoundError(
      f'{src} should hold exactly one TF checkpoint (*.index); found {indexes or "none"}.'
    )
  return indexes[0][: -len('.index')]


def read_tf_bert(src: str) -> tuple[dict, dict[str, np.ndarray], list[str]]:
  """Returns (bert_config, tensors under transformers' names, skipped training state)."""
  import tensorflow as tf

  directory = src if os.path.isdir(src) else os.path.dirname(src)
  config_path = os.path.join(directory, CONFIG)
  if not os.path.isfile(config_path):
    raise FileNotFoundError(f'{directory} has no {CONFIG}.')
  with open(config_path) as f:
    config = json.load(f)
  reader = tf.train.load_checkpoint(find_checkpoint(src))
  tensors, skipped = {}, []
  for name in sorted(reader.get_variable_to_shape_map()):
    if _TRAINING_STATE.fullmatch(name):
      skipped.append(name)
      continue
    target, transposed = hf_name(name)
    value = reader.get_tensor(name)
    tensors[target] = value.T if transposed else value
  return config, tensors, skipped


def import_tf_bert(src: str, out: str) -> Converted:
  """Converts a google-research/bert checkpoint directory `src` into our directory `out`."""
  config, tensors, skipped = read_tf_bert(src)
  c = hf.from_tensors('bert', {**config, 'model_type': 'bert'}, tensors, os.path.abspath(src))
  c.ignored += skipped
  hf.warn_unconverted(c)
  os.makedirs(out, exist_ok=True)
  directory = src if os.path.isdir(src) else os.path.dirname(src)
  c.tokenizer_files = checkpoint_io.copy_tokenizer_files(directory, out)
  converted.save(out, c)
  return c
