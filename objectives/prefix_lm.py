"""Prefix LM for the encoder-decoder (Raffel et al. 2020, section 3.3.1), T5's variant.

Each packed segment (BOS body EOS) is split at a uniformly random point of its
body: the encoder reads the prefix and EOS, the decoder writes the rest and EOS.
The split point of a body of L >= 2 tokens is 1 + floor(u * (L - 1)), so both
sides hold at least one token; a one-token body stays in the encoder. Rows
keep their packed length (`seq_len`) on both sides, so nothing is clipped.
"""

import numpy as np

from data import host_random
from models import heads
from objectives.shared import seq2seq

FRAMING = ('bos_id', 'eos_id')
SHOW = 'seq2seq'
# The objective API's eval figures and loss: seq2seq's.
eval_summary = seq2seq.eval_summary
loss_fn = seq2seq.loss_fn


def build_model(model_cfg):
  """The encoder-decoder (T5's, or any Seq2SeqLM preset)."""
  return heads.Seq2SeqLM(model_cfg)


def split(batch: dict, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(prefix, suffix, eos) masks [batch, length] over the packed tokens."""
  segment_ids, positions = batch['segment_ids'], batch['positions']  # [batch, length]
  rows, length = segment_ids.shape
  real = segment_ids > 0
  following = np.zeros_like(segment_ids)
  following[:, :-1] = segment_ids[:, 1:]
  eos = real & (following != segment_ids)
  body = real & (positions > 0) & ~eos
  flat = (np.arange(rows)[:, None] * length + segment_ids).reshape(-1)
  size = np.bincount(flat, minlength=rows * length)[flat].reshape(rows, length) - 2  # Body L.
  start = np.arange(length)[None, :] - positions  # Column of the segment's BOS.
  u = host_random.uniform(seed, batch['epoch'], batch['example_id'], length, 0)
  u = np.take_along_axis(u, np.clip(start, 0, length - 1), axis=1)
  cut = np.where(size >= 2, 1 + np.floor(u * (size - 1)), size)  # Prefix body tokens.
  prefix = body & (positions - 1 < cut)
  return prefix, body & ~prefix, eos


def make_preprocess(objective_cfg, tokenizer, seed: int):
  """Returns `preprocess(batch) -> batch`: prefixes to the encoder, the rest to the decoder."""
  del objective_cfg  # No settings: the split point is uniform.

  def preprocess(batch: dict) -> dict:
    tokens, segment_ids = batch['tokens'], batch['segment_ids']
    length = tokens.shape[1]
    prefix, suffix, eos = split(batch, seed)
    encoder = seq2seq.pack_emitted(prefix | eos, tokens, segment_ids, length)
    decoder = seq2seq.pack_emitted(suffix | eos, tokens, segment_ids, length)
    return seq2seq.model_batch(
      encoder,
      decoder,
      inputs=encoder['tokens'],
      targets=decoder['tokens'],
      weights=decoder['segment_ids'] > 0,
      start_id=tokenizer.eos_id,
    )

  return preprocess
