"""Every pretraining recipe and model family trains through the real loop on a CPU.

One case per recipe (configs/cpu/*.py) or family (a preset under quickstart's MLM or
CLM): the config is shrunk to a tiny shape (2 layers of 64, 8 rows of 64 tokens, the
shared SentencePiece fixture), trained for a few steps by train.py's own function, and
the logged loss must fall by a margin; a case may check more of its log (ELECTRA's sum
of losses, UniLM's per-kind losses, a combination's parts).
"""

import dataclasses
import importlib
import json
import os
from collections.abc import Callable

import numpy as np
import pytest

from configs import base
from data import sentence_pairs, sources, tokenizers
from evaluation import during_training
from models import presets


@dataclasses.dataclass(frozen=True)
class Case:
  config: str  # Module path of the config file.
  steps: int
  drop: float  # The mean loss of the last `window` steps is below the first's by this.
  window: int = 3
  key: str = 'loss'  # The logged figure that must fall.
  overrides: tuple = ()  # (dotted key, value) pairs after the common shrink.
  tiny: bool = True  # Shrink a Transformer to 2 x 64 (ELMo and word2vec set their own).
  seq_len: int = 64
  warmup: int = 2  # Warm-up steps.
  eval_every: int = 0  # Evaluate (held-out) every this many steps; 0: never.
  data: str = 'spm'  # 'spm': the SentencePiece fixture; 'parallel': the parallel corpus.
  check: Callable[[list[dict]], None] | None = None  # More of the log to check.


def _electra_parts(records):
  for r in records:  # The total is MLM + 50 x RTD at every step.
    assert r['loss'] == pytest.approx(r['mlm_loss'] + 50.0 * r['rtd_loss'], rel=1e-4)
  replaced = np.mean([r['replaced_fraction'] for r in records])
  assert 0.05 < replaced < 0.2, replaced  # About 15% x (1 - 1/vocab): the positives.


def _unilm_kinds(records):
  for kind in ('bidirectional', 'left_to_right', 'right_to_left', 'seq2seq'):
    losses = np.array([r[f'loss_{kind}'] for r in records])  # 0 at a step without the kind.
    assert np.isfinite(losses).all() and (losses > 1).sum() >= 10, kind


def _parts(*names):
  """A combination logs each part; the optimized total is their sum (weights 1)."""

  def check(records):
    train = [r for r in records if 'total_loss' in r]
    for r in train:
      np.testing.assert_allclose(r['total_loss'], sum(r[n] for n in names), rtol=1e-4)
    if 'sentence_order/loss' in names:
      assert all(0.0 <= r['sentence_order/accuracy'] <= 1.0 for r in train)
      # The held-out evaluation reports the auxiliary part too.
      evaluation = [r for r in records if 'eval/sentence_order/accuracy' in r]
      assert len(evaluation) == 1 and np.isfinite(evaluation[0]['eval/loss']), evaluation

  return check


def _span_boundary_falls(records):
  _parts('loss', 'span_boundary/loss')(records)
  losses = np.array([r['span_boundary/loss'] for r in records])  # Chance: ln(1000) = 6.9.
  assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.5, losses


def _ranking_improves(records):
  _parts('loss', 'contrastive/loss')(records)
  ranking = np.array([r['contrastive/accuracy'] for r in records])
  assert np.mean(ranking[-5:]) > np.mean(ranking[:5]), ranking


_BERT = (('model.preset', 'bert-base'),)
RECIPES = {
  'wwm': Case('configs.cpu.wwm', 12, 0.2, overrides=_BERT),
  'unilm': Case('configs.cpu.unilm', 30, 0.3, 5, overrides=_BERT, check=_unilm_kinds),
  'macbert': Case('configs.cpu.macbert', 30, 0.3, 5, overrides=_BERT, warmup=3),
  'ernie': Case('configs.cpu.ernie', 30, 0.3, 5, overrides=_BERT, warmup=3),
  'spanbert_sbo': Case(
    'configs.cpu.spanbert_sbo', 30, 0.5, 5, overrides=_BERT, warmup=3, check=_span_boundary_falls
  ),  # fmt: skip
  'bert_nsp': Case(
    'configs.cpu.bert_nsp',
    30,
    0.3,
    5,
    'total_loss',
    warmup=3,
    eval_every=30,
    check=_parts('loss', 'sentence_order/loss'),
  ),  # fmt: skip
  'albert_sop': Case(
    'configs.cpu.albert_sop',
    30,
    0.3,
    5,
    'total_loss',
    warmup=3,
    eval_every=30,
    check=_parts('loss', 'sentence_order/loss'),
  ),  # fmt: skip
  'xlm_tlm': Case('configs.cpu.xlm_tlm', 30, 0.3, 5, data='parallel', warmup=3),
  'xlm_contrastive': Case(
    'configs.cpu.xlm_contrastive',
    30,
    0.3,
    5,
    'total_loss',
    warmup=3,
    data='parallel',
    check=_ranking_improves,
  ),  # fmt: skip
  'xlnet': Case('configs.cpu.xlnet', 30, 0.5, 5),
  't5': Case('configs.cpu.t5', 12, 0.3),
  'bart': Case('configs.cpu.bart', 15, 0.2),
  'mass': Case('configs.cpu.mass', 15, 0.2),
  'electra': Case('configs.cpu.electra', 30, 2.0, 5, warmup=3, check=_electra_parts),
  # Gradient accumulation through the real loop, on a loss of two terms (MLM + 50 x RTD:
  # objectives/electra.py's loss_terms) on an FSDP mesh; the loop raises if the declared
  # terms are not the objective's loss.
  'electra-2-microbatches': Case(
    'configs.cpu.electra',
    30,
    2.0,
    5,
    warmup=3,
    overrides=(('num_microbatches', 2), ('batch_size', 16), ('mesh.fsdp', 2)),
  ),  # fmt: skip
  'elmo': Case(
    'configs.cpu.elmo',
    12,
    0.2,
    tiny=False,
    seq_len=32,
    overrides=(('model.d_model', 32), ('optimizer.learning_rate', 1e-2)),
  ),  # fmt: skip
  'word2vec-skipgram': Case(
    'configs.cpu.word2vec',
    12,
    0.2,
    tiny=False,
    seq_len=32,
    overrides=(
      ('model.d_model', 32),
      ('objective.subsample', 0.0),
      ('optimizer.learning_rate', 3e-2),
    ),
  ),  # fmt: skip
  'word2vec-cbow': Case(
    'configs.cpu.word2vec',
    12,
    0.2,
    tiny=False,
    seq_len=32,
    overrides=(
      ('model.preset', 'word2vec-cbow'),
      ('model.d_model', 32),
      ('objective.subsample', 0.0),
      ('optimizer.learning_rate', 3e-2),
    ),
  ),  # fmt: skip
}
# Every Transformer family under quickstart's recipe with the objective its preset fits.
FAMILIES = {
  'bert-base': 'objectives.mlm',
  'roberta-base': 'objectives.mlm',
  'albert-base': 'objectives.mlm',  # Factorized embeddings, one shared block.
  'electra-small': 'objectives.mlm',  # Factorized, no pooler.
  'distilbert': 'objectives.mlm',  # No token types.
  'tinybert-4': 'objectives.mlm',
  'ernie-1.0': 'objectives.mlm',  # ReLU.
  'gpt1': 'objectives.clm',  # Post-LN decoder.
  'gpt2-small': 'objectives.clm',
  'gpt3-small': 'objectives.clm',  # Separate head_dim field.
  't5-small': 'objectives.denoising',  # RMS norm, relative buckets, no biases, tied + rescaled.
  't5-v1_1-small': 'objectives.denoising',  # Gated GELU, untied output.
  'bart-base': 'objectives.denoising',  # Post-LN encoder-decoder, learned positions offset 2.
  'mass-base': 'objectives.mass',  # One fragment of ~50% per segment.
}
CASES = {
  **RECIPES,
  **{
    f'family-{preset}': Case(
      'configs.quickstart',
      12,
      0.2,
      overrides=(('model.preset', preset), ('objective.module', module)),
    )
    for preset, module in FAMILIES.items()
  },
}


def _cipher(sentence: str) -> str:
  """A stand-in 'translation' with a learnable word-for-word mapping: each word reversed."""
  return ' '.join(word[::-1] for word in sentence.split())


@pytest.fixture(scope='module')
def parallel_file(tmp_path_factory) -> str:
  """600 English sentences of the embedded corpus and their cipher, 20 pairs per document."""
  sentences = []
  for doc in sources.load_documents(base.get_config().data, 'train'):
    sentences += [s for s in sentence_pairs.split_sentences(doc) if 4 <= len(s.split()) <= 20]
  path = tmp_path_factory.mktemp('parallel') / 'pairs.tsv'
  lines = [f'{s}\t{_cipher(s)}' for s in sentences[:600]]
  blocks = ['\n'.join(lines[i : i + 20]) for i in range(0, len(lines), 20)]
  path.write_text('\n\n'.join(blocks) + '\n', encoding='utf-8')
  return str(path)


def _synonym_table(spm_path: str, path: str) -> str:
  """A made-up synonym table over the word-start pieces: each word's similar words are
  its neighbours in the vocabulary (enough to exercise MacBERT's similar-word path)."""
  tokenizer = tokenizers.load_tokenizer(spm_path)
  words = [tokenizer.id_to_piece(i) for i in range(tokenizer.vocab_size)]
  words = [w[1:] for w in words if w.startswith('▁') and len(w) > 1]
  with open(path, 'w', encoding='utf-8') as f:
    for i, word in enumerate(words):
      f.write(f'{word}\t{words[i - 1]} {words[(i + 1) % len(words)]}\n')
  return path


def _set(config, key: str, value):
  *parents, name = key.split('.')
  node = config
  for parent in parents:
    node = node[parent]
  node[name] = value


def shrink(config, case: Case):
  """The common tiny shape; the case's overrides come last."""
  for key, value in case.overrides:
    if key == 'model.preset':
      _set(config, key, value)
  if case.tiny:
    cfg = presets.get_config(config.model.preset)
    config.model.num_layers, config.model.d_model = 2, 64
    config.model.num_heads, config.model.mlp_dim = 2, 128
    if getattr(cfg, 'num_decoder_layers', 0):  # XLNet's config has no decoder.
      config.model.num_decoder_layers = 2
    if getattr(cfg, 'embed_dim', None):
      config.model.embed_dim = 32
  config.batch_size, config.seq_len, config.total_steps = 8, case.seq_len, case.steps
  config.log_every_steps, config.eval_every_steps = 1, case.eval_every
  config.checkpoint_every_steps = case.steps  # The last step only.
  config.optimizer.learning_rate = 3e-3
  config.optimizer.warmup_steps, config.optimizer.warmup_ratio = case.warmup, 0.0
  config.peak_flops_per_device = 1e9  # No matmul peak measured (quickstart's test does it).
  for key, value in case.overrides:
    _set(config, key, value)
  return config


@pytest.mark.slow
@pytest.mark.parametrize('name', sorted(CASES))
def test_recipe_trains_at_tiny_width(name, tmp_path, spm_path, request):
  case = CASES[name]
  config = shrink(importlib.import_module(case.config).get_config(), case)
  if case.data == 'parallel':
    config.data.text_files = request.getfixturevalue('parallel_file')
    config.data.vocab_size, config.data.eval_fraction = 1000, 0.1
  else:
    config.data.tokenizer_path = spm_path
  if name == 'macbert':
    config.objective.synonyms_path = _synonym_table(spm_path, str(tmp_path / 'synonyms.tsv'))
  workdir = str(tmp_path / 'run')
  during_training.train_and_evaluate(config, workdir)

  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    records = [json.loads(line) for line in f]
  losses = np.array([r[case.key] for r in records if case.key in r])  # Training records.
  assert len(losses) == case.steps and np.all(np.isfinite(losses)), losses
  first, last = np.mean(losses[: case.window]), np.mean(losses[-case.window :])
  assert last < first - case.drop, losses
  if case.check is not None:
    case.check(records)


def test_every_cpu_recipe_has_a_case():
  found = {
    f'configs.cpu.{name[:-3]}'
    for name in os.listdir(os.path.join(os.path.dirname(base.__file__), 'cpu'))
    if name.endswith('.py') and name != '__init__.py'
  }
  covered = {case.config for case in CASES.values()}
  # spanbert.py is spanbert_sbo.py without the boundary objective (tests/objectives).
  assert found - covered == {'configs.cpu.spanbert'}, found - covered
