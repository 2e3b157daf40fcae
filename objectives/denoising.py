"""BART denoising (Lewis et al. 2020): the encoder reads corrupted text, the decoder
writes the original.

Implemented corruption: token masking, BART's first noising function. Each
non-special token is selected and replaced exactly as in MLM (objectives/mlm.py:
`mask_rate`, then [MASK] / random / kept), with the same derived randomness. The decoder predicts every token of every segment (BOS ... EOS), from
inputs shifted right with EOS first, as BART does. Deletion, infilling,
sentence permutation and rotation change lengths and come with the objectives
issue.
"""

from models import heads
from objectives import mlm, seq2seq
from objectives.seq2seq import eval_summary, loss_fn  # noqa: F401  (objective API)

FRAMING = ('bos_id', 'eos_id')
# `python -m data.show` prints the encoder's (corrupted) text beside the decoder's target.
SHOW = 'seq2seq'


def build_model(model_cfg):
  """The encoder-decoder with its output tied to the shared embedding (or untied)."""
  return heads.Seq2SeqLM(model_cfg)


def make_preprocess(objective_cfg, tokenizer, seed: int):
  """Returns `preprocess(batch) -> batch`: masked encoder rows, original decoder targets."""
  mask = mlm.make_masker(objective_cfg, tokenizer, seed)

  def preprocess(batch: dict) -> dict:
    inputs, _ = mask(batch)
    return seq2seq.model_batch(
      batch,
      batch,
      inputs=inputs,
      targets=batch['tokens'],
      weights=batch['segment_ids'] > 0,
      start_id=tokenizer.eos_id,
    )

  return preprocess
