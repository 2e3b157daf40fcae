"""Tests of objectives/prefix_lm.py (T5's prefix LM for the encoder-decoder)."""

import numpy as np
import scipy.stats

from objectives import prefix_lm
from tests.objectives.test_span_corruption import TOKENIZER, _batch


def test_prefix_and_suffix_give_back_every_segment():
  batch = _batch(batch_size=128, seq_len=128)
  out = prefix_lm.make_preprocess(None, TOKENIZER, seed=0)(batch)
  checked = 0
  for row in range(128):
    for segment in range(1, batch['segment_ids'][row].max() + 1):
      body = batch['tokens'][row, batch['segment_ids'][row] == segment][1:-1]
      enc = out['inputs'][row, out['segment_ids'][row] == segment]
      dec = out['targets'][row, out['decoder_segment_ids'][row] == segment]
      assert enc[-1] == TOKENIZER.eos_id and dec[-1] == TOKENIZER.eos_id
      np.testing.assert_array_equal(np.concatenate([enc[:-1], dec[:-1]]), body)
      assert len(enc) >= 2 and (len(dec) >= 2 or len(body) < 2)
      checked += 1
  assert checked > 300
  np.testing.assert_array_equal(out['weights'], out['decoder_segment_ids'] > 0)


def test_split_point_is_uniform_and_derived():
  batch = _batch(batch_size=4000, max_doc=100_000, tiny=0.0)
  full = (batch['segment_ids'].max(1) == 1) & (batch['segment_ids'] > 0).all(1)
  prefix, _, _ = prefix_lm.split(batch, seed=0)
  cuts = prefix[full].sum(1)  # Body of 141 tokens: the cut is uniform on 1..140.
  observed = np.bincount(cuts, minlength=141)[1:]
  assert scipy.stats.chisquare(observed).pvalue > 1e-4
  half = {k: v[100:] for k, v in batch.items()}
  np.testing.assert_array_equal(prefix_lm.split(half, seed=0)[0], prefix[100:])
  other = prefix_lm.split({**batch, 'epoch': batch['epoch'] + 1}, seed=0)[0]
  assert (other != prefix).mean() > 0.1
