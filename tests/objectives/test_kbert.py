"""K-BERT in the encoder (models/attention.SegmentMask.visible, heads.KnowledgeClassifier,
objectives/kbert.py): the visible matrix composes with packing and padding, the injected
knowledge reaches only its entity (soft positions keep the trunk where it was), the
parameters are BERT's, and the rows reach the model through the trainer and evaluation."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from configs import kbert as kbert_config
from data import knowledge, tasks, tokenizers
from models import heads, transformer
from models.transformer_config import TransformerConfig
from tests.data.test_knowledge import WordTokenizer
from tests.training import finetune_runs

CFG = TransformerConfig(vocab_size=64, num_layers=2, d_model=16, num_heads=2, mlp_dim=32,
                        dropout_rate=0.0, max_len=32)  # fmt: skip


def _stack(cfg=CFG):
  stack = transformer.Stack(cfg)
  tokens = np.zeros((1, 8), np.int32)
  return stack, nn.unbox(stack.init(jax.random.key(0), tokens, np.ones_like(tokens)))


def test_visible_matrix_composes_with_packing_and_padding():
  stack, params = _stack()
  rng = np.random.default_rng(0)
  a, b = rng.integers(3, 64, 5), rng.integers(3, 64, 3)
  # Two documents packed in one row, then padding: segments 1, 2, 0.
  tokens = np.concatenate([a, b, [0, 0]])[None].astype(np.int32)
  segments = np.array([[1] * 5 + [2] * 3 + [0, 0]], np.int32)
  positions = np.array([[0, 1, 2, 3, 4, 0, 1, 2, 0, 0]], np.int32)
  run = lambda t, s, p, v=None: np.asarray(stack.apply(params, t, s, p, visible=v))  # noqa: E731
  plain = run(tokens, segments, positions)
  # A visible matrix of all ones changes nothing: the segments still isolate the documents.
  ones = np.ones((1, 10, 10), bool)
  np.testing.assert_array_equal(run(tokens, segments, positions, ones), plain)
  # Hiding a's last two tokens from its first three (and back): b, in its own segment,
  # is untouched; a's first three equal a three-token document of their own.
  visible = ones.copy()
  visible[0, :3, 3:5] = visible[0, 3:5, :3] = False
  both = run(tokens, segments, positions, visible)
  np.testing.assert_allclose(both[0, 5:8], plain[0, 5:8], atol=1e-6)
  alone = run(a[None, :3].astype(np.int32), np.ones((1, 3), np.int32), positions[:, :3])
  np.testing.assert_allclose(both[0, :3], alone[0], atol=1e-5)
  with pytest.raises(ValueError, match='visible'):
    run(tokens, segments, positions, ones[:, :9])


def test_injected_knowledge_reaches_only_its_entity(tmp_path):
  """One layer: every trunk token but the entity's sees exactly what it saw without the
  knowledge, at the same (soft) positions, so its output is unchanged."""
  (tmp_path / 'kg.tsv').write_text('beijing\tcapital_of\tchina\n', encoding='utf-8')
  graph = knowledge.read_triples(str(tmp_path / 'kg.tsv'))
  tokenizer = WordTokenizer()
  text = 'we flew to beijing in may'
  row = knowledge.encode_pair(tokenizer, text, None, 16, graph=graph, max_triples=2)
  none = knowledge.encode_pair(
    tokenizer, text, None, 16, graph=knowledge.KnowledgeGraph({}), max_triples=2
  )
  stack, params = _stack(TransformerConfig(**{**CFG.__dict__, 'num_layers': 1}))
  out = lambda r: np.asarray(  # noqa: E731
    stack.apply(
      params,
      *(r[k][None] for k in ('tokens', 'segment_ids', 'positions')),
      visible=r['visible'][None],
    )  # fmt: skip
  )[0]
  with_kg, without = out(row), out(none)
  # Trunk: [CLS] we flew to beijing | capital of china | in may [SEP].
  kept = [0, 1, 2, 3, 8, 9, 10]
  np.testing.assert_allclose(with_kg[kept], without[[0, 1, 2, 3, 5, 6, 7]], atol=1e-5)
  assert np.abs(with_kg[4] - without[4]).max() > 1e-3  # The entity read its branch.


def test_knowledge_classifier_has_bert_s_parameters():
  tokens = np.zeros((1, 8), np.int32)
  shapes = {}
  for head in (heads.SequenceClassifier(CFG, 2), heads.KnowledgeClassifier(CFG, 2)):
    tree = jax.eval_shape(lambda m=head: m.init(jax.random.key(0), tokens, tokens + 1))
    shapes[type(head).__name__] = jax.tree.map(lambda x: x.shape, nn.unbox(tree))
  assert shapes['SequenceClassifier'] == shapes['KnowledgeClassifier']


@pytest.mark.slow
def test_trainer_and_evaluation_feed_the_knowledge_rows(spm_path, tmp_path):
  """A short run on 8 devices; its evaluation's accuracy equals the trained classifier's on
  rows built here by data/knowledge.py (visible matrix and soft positions), which the
  matrix changes: the knowledge went through the loader, the sharding and the eval loop."""
  finetune_runs.write_sst2(tmp_path / 'glue', 64, 16)
  (tmp_path / 'kg.tsv').write_text('film\tis_a\tmovie\nstory\tis_a\tnarrative tale\n')
  config = finetune_runs.tiny(kbert_config.get_config('sst2'), spm_path, tmp_path / 'glue')
  config.objective.knowledge_file = str(tmp_path / 'kg.tsv')
  result, run = finetune_runs.short_run(config, str(tmp_path / 'run'))
  graph = knowledge.read_triples(config.objective.knowledge_file)
  tokenizer = tokenizers.load_tokenizer(spm_path)
  records = tasks.load_examples(config.data, 'dev')
  rows = [knowledge.encode_pair(tokenizer, r['text_a'], None, 32, graph=graph, max_triples=2)
          for r in records]  # fmt: skip
  batch = {k: np.stack([row[k] for row in rows]) for k in rows[0]}
  assert (batch['segment_ids'].sum(1) < batch['visible'].sum((1, 2))).all()  # Branches in.
  model = heads.KnowledgeClassifier(run.model_cfg, 2)
  logits = jax.jit(
    lambda visible: model.apply({'params': run.params}, batch['tokens'], batch['segment_ids'],
                                batch['positions'], batch['token_types'], visible=visible)
  )  # fmt: skip
  with_matrix, without = np.asarray(logits(batch['visible'])), np.asarray(logits(None))
  assert np.abs(with_matrix - without).max() > 1e-4  # The matrix matters to these weights.
  labels = np.array([r['label'] for r in records])
  accuracy = float(np.mean(with_matrix.argmax(-1) == labels))
  assert result['step'] == 8 and len(records) == 16
  assert result['metrics']['accuracy'] == pytest.approx(accuracy)
