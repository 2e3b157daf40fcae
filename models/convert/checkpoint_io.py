"""Hugging Face checkpoint directories: config.json, weights, tokenizer files.

The safety rule: the only pickles ever opened are PyTorch `.bin` weight files,
and only through `torch.load(path, weights_only=True, map_location='cpu')`,
which rebuilds tensors and plain containers and refuses any other object.
Without torch, a `.bin` is refused with a message saying how to proceed.
safetensors files are read by `safetensors_format` (JSON header and raw
numbers, nothing executed) and are what we write.
"""

import json
import os
import pickle
import shutil

import ml_dtypes
import numpy as np

from models.convert import safetensors_format

CONFIG = 'config.json'
SAFETENSORS = 'model.safetensors'
SAFETENSORS_INDEX = 'model.safetensors.index.json'
TORCH_BIN = 'pytorch_model.bin'
TORCH_BIN_INDEX = 'pytorch_model.bin.index.json'
# Tokenizer files a model directory may carry (WordPiece, BPE, SentencePiece).
TOKENIZER_FILES = (
  'vocab.txt',
  'vocab.json',
  'merges.txt',
  'tokenizer.json',
  'tokenizer_config.json',
  'special_tokens_map.json',
  'added_tokens.json',
  'spiece.model',
  'sentencepiece.bpe.model',
)


def read_config(src: str) -> dict:
  """Returns the parsed `config.json` of directory `src`."""
  path = os.path.join(src, CONFIG)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{src} has no {CONFIG}; is it a Hugging Face model directory?')
  with open(path) as f:
    return json.load(f)


def load_torch_bin(path: str) -> dict[str, np.ndarray]:
  """Reads a PyTorch `.bin` state dict with `weights_only=True` (tensors only).

  Raises:
    ImportError: torch is not installed.
    ValueError: The file holds objects other than tensors (it is never unpickled freely).
  """
  try:
    import torch
  except ImportError as e:
    raise ImportError(
      f'{path} is a PyTorch pickle; reading it needs torch (pip install -r '
      'requirements-parity.txt), which loads it with weights_only=True. Without torch, '
      'use a checkpoint with model.safetensors instead.'
    ) from e
  try:
    state = torch.load(path, weights_only=True, map_location='cpu')
  except pickle.UnpicklingError as e:
    raise ValueError(
      f'Refusing {path}: it holds objects other than tensors, and we only unpickle with '
      f'weights_only=True. torch says: {str(e).splitlines()[0]}'
    ) from e
  if not isinstance(state, dict):
    raise ValueError(f'{path} holds a {type(state).__name__}, not a state dict of tensors.')
  tensors = {}
  for name, value in state.items():
    if not isinstance(value, torch.Tensor):
      raise ValueError(f'{path}: entry {name!r} is a {type(value).__name__}, not a tensor.')
    value = value.detach().contiguous()
    if value.dtype == torch.bfloat16:  # NumPy has no bfloat16: reinterpret the bits.
      tensors[name] = value.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    else:
      tensors[name] = value.numpy()
  return tensors


def _read_weight_file(path: str) -> dict[str, np.ndarray]:
  if path.endswith('.safetensors'):
    return safetensors_format.read(path)
  return load_torch_bin(path)


def read_tensors(src: str) -> dict[str, np.ndarray]:
  """Returns every tensor of the weights in `src` (safetensors preferred, shards followed).

  Raises:
    FileNotFoundError: No weight file in `src`.
  """
  for name in (SAFETENSORS, SAFETENSORS_INDEX, TORCH_BIN, TORCH_BIN_INDEX):
    path = os.path.join(src, name)
    if not os.path.isfile(path):
      continue
    if not name.endswith('.index.json'):
      return _read_weight_file(path)
    with open(path) as f:
      shards = sorted(set(json.load(f)['weight_map'].values()))
    tensors = {}
    for shard in shards:
      tensors.update(_read_weight_file(os.path.join(src, shard)))
    return tensors
  raise FileNotFoundError(
    f'{src} has none of {SAFETENSORS}, {SAFETENSORS_INDEX}, {TORCH_BIN}, {TORCH_BIN_INDEX}.'
  )


def copy_tokenizer_files(src: str, out: str) -> list[str]:
  """Copies the tokenizer files found in `src` into `out`; returns their names."""
  found = [n for n in TOKENIZER_FILES if os.path.isfile(os.path.join(src, n))]
  for name in found:
    shutil.copyfile(os.path.join(src, name), os.path.join(out, name))
  return found


def write_hf_dir(out: str, config: dict, tensors: dict[str, np.ndarray]) -> None:
  """Writes `config.json` and `model.safetensors` (PyTorch layout) into `out`."""
  os.makedirs(out, exist_ok=True)
  safetensors_format.write(os.path.join(out, SAFETENSORS), tensors, metadata={'format': 'pt'})
  with open(os.path.join(out, CONFIG), 'w') as f:
    json.dump(config, f, indent=2, sort_keys=True)
    f.write('\n')
