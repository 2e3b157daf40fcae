"""What encoder-decoder objectives share (BART denoising, T5 span corruption, MASS).

Their host side ends in the same model batch: the encoder's row (`inputs`,
`segment_ids`, `positions`), the decoder's (`decoder_inputs`,
`decoder_segment_ids`, `decoder_positions`, all [batch, dec_length]) and what it
predicts (`targets`, `weights`). Packed pairs stay apart: decoder segment k
attends to encoder segment k only. The loss is the weighted cross-entropy of
the decoder's logits.
"""

import numpy as np

from objectives.shared import token_lm

# The objective API's eval figures: token_lm's.
eval_summary = token_lm.eval_summary

# The batch arrays `Seq2SeqLM` takes, in order.
MODEL_INPUTS = (
  'inputs',
  'segment_ids',
  'positions',
  'decoder_inputs',
  'decoder_segment_ids',
  'decoder_positions',
)


def shift_right(targets: np.ndarray, segment_ids: np.ndarray, start_id: int) -> np.ndarray:
  """Decoder inputs [batch, length]: each segment's targets delayed by one, `start_id` first.

  Teacher forcing: position t sees target t - 1 of its own segment, so no
  packed segment reads the end of the one before it.
  """
  inputs = np.full_like(targets, start_id)
  inputs[:, 1:] = targets[:, :-1]
  starts = np.ones(segment_ids.shape, bool)
  starts[:, 1:] = segment_ids[:, 1:] != segment_ids[:, :-1]
  return np.where(starts, start_id, inputs)


def segment_positions(segment_ids: np.ndarray) -> np.ndarray:
  """Positions [batch, length] restarting at 0 in every segment (0 on padding)."""
  index = np.broadcast_to(np.arange(segment_ids.shape[1]), segment_ids.shape)
  starts = np.ones(segment_ids.shape, bool)
  starts[:, 1:] = segment_ids[:, 1:] != segment_ids[:, :-1]
  start_index = np.maximum.accumulate(np.where(starts, index, 0), axis=1)
  return np.where(segment_ids > 0, index - start_index, 0).astype(np.int32)


def pack_emitted(emit, values, segment_ids, out_len: int) -> dict:
  """Left-aligns the emitted entries of each row into [batch, out_len] rows."""
  rows = emit.shape[0]
  dest = np.cumsum(emit, axis=1) - 1
  if dest.size and dest[:, -1].max() >= out_len:
    raise AssertionError(f'Corrupted row of {dest[:, -1].max() + 1} > {out_len} tokens.')
  r = np.broadcast_to(np.arange(rows)[:, None], emit.shape)
  tokens = np.zeros((rows, out_len), np.int32)
  segments = np.zeros((rows, out_len), np.int32)
  tokens[r[emit], dest[emit]] = values[emit]
  segments[r[emit], dest[emit]] = segment_ids[emit]
  return {'tokens': tokens, 'segment_ids': segments, 'positions': segment_positions(segments)}


def model_batch(encoder: dict, decoder: dict, *, inputs, targets, weights, start_id: int) -> dict:
  """The arrays the encoder-decoder and its loss see.

  Args:
    encoder: `segment_ids` and `positions` [batch, enc_length] of the encoder's row.
    decoder: `segment_ids` and `positions` [batch, dec_length] of the decoder's row.
    inputs: [batch, enc_length] ids fed to the encoder (the corrupted text).
    targets: [batch, dec_length] ids the decoder predicts.
    weights: [batch, dec_length] 1 where a prediction counts.
    start_id: the decoder's first input in each segment.
  """
  decoder_segment_ids = decoder['segment_ids'].astype(np.int32)
  return {
    'inputs': np.asarray(inputs, np.int32),
    'segment_ids': encoder['segment_ids'].astype(np.int32),
    'positions': encoder['positions'].astype(np.int32),
    'decoder_inputs': shift_right(np.asarray(targets, np.int32), decoder_segment_ids, start_id),
    'decoder_segment_ids': decoder_segment_ids,
    'decoder_positions': decoder['positions'].astype(np.int32),
    'targets': np.asarray(targets, np.int32),
    'weights': np.asarray(weights, np.float32),
  }


def loss_fn(params, batch, rng, *, model):
  """Mean cross-entropy over the decoder's weighted positions; `rng=None` means evaluation."""
  return token_lm.loss_fn(params, batch, rng, model=model, model_inputs=MODEL_INPUTS)
