"""MASS (Song et al. 2019): masked sequence-to-sequence pretraining.

Host side, vectorized over the batch: in each packed segment one contiguous
fragment of round(`fragment_rate` * n) of its n ordinary tokens (specials such
as the BOS / EOS framing are never taken; the ordinary tokens of a segment are
contiguous in packed data) starts at a uniform offset. The encoder sees the
segment with the fragment replaced by [MASK]s, at the original positions. The
decoder row holds only the fragments, packed in row order at their original
positions: it is fed each fragment shifted right (EOS first, then the
fragment's previous tokens, as MASS feeds the decoder nothing outside the
fragment) and predicts every fragment token, and nothing else.
"""

import numpy as np
from ml_collections import config_dict

from data import host_random
from models import heads
from objectives.denoising import _segment_layout
from objectives.shared import seq2seq

FRAMING = ('bos_id', 'eos_id')
SHOW = 'seq2seq'
# The objective API's eval figures and loss: seq2seq's.
eval_summary = seq2seq.eval_summary
loss_fn = seq2seq.loss_fn
_OFFSET_STREAM = 20


def config() -> config_dict.ConfigDict:
  """MASS's key."""
  c = config_dict.ConfigDict()
  c.fragment_rate = 0.5  # Fraction of each segment's tokens in its masked fragment.
  return c


def build_model(model_cfg):
  """The encoder-decoder (Seq2SeqLM) MASS trains."""
  return heads.Seq2SeqLM(model_cfg)


def make_fragmenter(objective_cfg, tokenizer, seed: int):
  """Returns `fragment(batch) -> [batch, length] bool`: the tokens MASS masks."""
  rate = float(objective_cfg.fragment_rate)
  if not 0.0 < rate < 1.0:
    raise ValueError(f'objective.fragment_rate={rate} must be in (0, 1).')
  special_ids = np.asarray(tokenizer.special_ids)

  def fragment(batch: dict) -> np.ndarray:
    tokens, segment_ids = batch['tokens'], batch['segment_ids']  # [batch, length]
    movable = (segment_ids > 0) & ~np.isin(tokens, special_ids)
    start, rank, count, _ = _segment_layout(movable, segment_ids)
    size = np.round(rate * count).astype(np.int64)  # Python's round: half to even.
    u = host_random.uniform(seed, batch['epoch'], batch['example_id'], tokens.shape[1],
                            _OFFSET_STREAM)  # fmt: skip
    offset = np.floor(np.take_along_axis(u, start, axis=1) * (count - size + 1)).astype(np.int64)
    return movable & (rank >= offset) & (rank < offset + size)

  return fragment


def make_preprocess(objective_cfg, tokenizer, seed: int):
  """Returns `preprocess(batch) -> batch`: masked encoder rows, fragment-only decoder rows."""
  fragment = make_fragmenter(objective_cfg, tokenizer, seed)

  def preprocess(batch: dict) -> dict:
    tokens = batch['tokens']
    chosen = fragment(batch)  # [batch, length]
    inputs = np.where(chosen, tokenizer.mask_id, tokens)
    # Pack each row's fragment tokens to the left, keeping segment ids and positions.
    order = np.argsort(~chosen, axis=1, kind='stable')
    kept = np.take_along_axis(chosen, order, axis=1)
    decoder = {
      key: np.where(kept, np.take_along_axis(batch[key], order, axis=1), 0)
      for key in ('tokens', 'segment_ids', 'positions')
    }
    return seq2seq.model_batch(
      batch,
      decoder,
      inputs=inputs,
      targets=decoder['tokens'],
      weights=kept,
      start_id=tokenizer.eos_id,
    )

  return preprocess
