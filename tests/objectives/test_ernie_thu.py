"""ERNIE-THU's pieces: TransE's distance, loss and negatives by hand and training/transe.py
learning a small graph (its file read back by name), the rows' entity vectors at the
mentions' first tokens, the fusion layer by hand, and a short run on 8 devices whose
evaluation equals the trained classifier on rows built here (which the vectors change)."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from configs import ernie_thu as ernie_config
from data import knowledge, tasks, tokenizers
from models import entity_fusion
from models.transformer_config import TransformerConfig
from objectives.shared import transe
from tests.data.test_knowledge import WordTokenizer
from tests.training import finetune_runs
from training import transe as transe_fit

KG = """paris\tcapital_of\tfrance
berlin\tcapital_of\tgermany
rome\tcapital_of\titaly
france\tpart_of\teurope
germany\tpart_of\teurope
italy\tpart_of\teurope
new york\tlocated_in\tusa
北京\t首都\t中国
"""


def test_transe_distance_loss_and_negatives_by_hand():
  h, r, t = np.array([[1.0, 2.0]]), np.array([[0.5, -1.0]]), np.array([[1.0, 0.0]])
  assert float(transe.distance(h, r, t, 1)[0]) == pytest.approx(0.5 + 1.0)
  assert float(transe.distance(h, r, t, 2)[0]) == pytest.approx(np.sqrt(0.25 + 1.0))
  loss = transe.margin_loss(np.array([1.0, 3.0]), np.array([2.5, 2.0]), 1.0)
  assert float(loss) == pytest.approx((0.0 + 2.0) / 2)
  triples = np.array([[0, 0, 1], [2, 1, 3], [4, 0, 5]] * 20)
  negative = transe.corrupt(triples, 10, seed=0, step=3)
  changed = (negative != triples).sum(1)
  assert (negative[:, 1] == triples[:, 1]).all() and changed.max() == 1
  kept_head = (negative[:, 0] == triples[:, 0]).mean()
  assert 0.2 < kept_head < 1.0 and changed.sum() > 40  # Heads and tails both replaced.
  np.testing.assert_array_equal(negative, transe.corrupt(triples, 10, seed=0, step=3))
  assert (negative != transe.corrupt(triples, 10, seed=0, step=4)).any()


@pytest.fixture(scope='module')
def entity_file(tmp_path_factory):
  """tools/transe.py's file for KG: (path, tail mean rank it reached)."""
  folder = tmp_path_factory.mktemp('transe')
  (folder / 'kg.tsv').write_text(KG, encoding='utf-8')
  graph = knowledge.read_triples(str(folder / 'kg.tsv'))
  names, relations, triples = knowledge.entity_ids(graph)
  entities, relation_vectors, _ = transe_fit.train(
    triples, len(names), len(relations), dim=16, steps=300, batch_size=0, learning_rate=0.05,
    margin=1.0, norm=1, seed=0,
  )  # fmt: skip
  ranks = transe_fit.tail_ranks(entities, relation_vectors, triples, 1)
  path = str(folder / 'entities.npz')
  knowledge.write_entity_vectors(path, names, entities, relations, relation_vectors)
  return path, float(ranks.mean())


def test_transe_learns_the_graph_and_its_file_reads_back_by_name(entity_file):
  path, mean_rank = entity_file
  assert mean_rank <= 1.5  # 11 entities: chance is 6.
  table = knowledge.read_entity_vectors(path)
  assert ('new', 'york') in table.row_of and ('北', '京') in table.row_of
  assert table.vectors.shape == (11, 16)
  np.testing.assert_allclose(np.linalg.norm(table.vectors, axis=-1), 1.0, rtol=1e-5)


def test_rows_carry_each_mention_s_vector_at_its_first_token(entity_file):
  table = knowledge.read_entity_vectors(entity_file[0])
  tokenizer = WordTokenizer()
  row = knowledge.encode_entities(tokenizer, 'from new york to paris', 'rome', 12, entities=table)
  words = [tokenizer.word(t) for t in row['tokens'][: int(row['segment_ids'].sum())]]
  assert words == ['[CLS]', 'from', 'new', 'york', 'to', 'paris', '[SEP]', 'rome', '[SEP]']
  assert np.flatnonzero(row['entity_mask']).tolist() == [2, 5, 7]
  for position, name in ((2, ('new', 'york')), (5, ('paris',)), (7, ('rome',))):
    np.testing.assert_array_equal(
      row['entity_vectors'][position], table.vectors[table.row_of[name]]
    )
  assert not row['entity_vectors'][~row['entity_mask']].any()


def test_without_a_mention_the_row_is_classification_s(entity_file, spm_path):
  table = knowledge.read_entity_vectors(entity_file[0])
  tokenizer = tokenizers.load_tokenizer(spm_path)
  a, b = 'the film was a story of people', 'and it was this plot'
  row = knowledge.encode_entities(tokenizer, a, b, 32, entities=table)
  plain = tasks.encode_pair(tokenizer, a, b, 32)
  for name in plain:
    np.testing.assert_array_equal(row[name], plain[name], err_msg=name)
  assert not row['entity_mask'].any()


def test_fusion_layer_by_hand():
  cfg = TransformerConfig(vocab_size=8, num_layers=1, d_model=4, num_heads=2, mlp_dim=8,
                          dropout_rate=0.0)  # fmt: skip
  rng = np.random.default_rng(0)
  x = rng.normal(size=(1, 3, 4)).astype(np.float32)
  e = rng.normal(size=(1, 3, 5)).astype(np.float32)
  mask = np.array([[False, True, False]])
  layer = entity_fusion.EntityFusion(cfg)
  params = nn.unbox(layer.init(jax.random.key(0), x, e, mask, True))
  p = jax.tree.map(np.asarray, params['params'])
  h = x @ p['token']['kernel'] + p['token']['bias']
  h = h + mask[..., None] * (e @ p['entity']['kernel'] + p['entity']['bias'])
  y = x + np.asarray(jax.nn.gelu(h)) @ p['out']['kernel'] + p['out']['bias']
  mean, var = y.mean(-1, keepdims=True), y.var(-1, keepdims=True)
  by_hand = (y - mean) / np.sqrt(var + cfg.layer_norm_eps) * p['norm']['scale'] + p['norm']['bias']
  np.testing.assert_allclose(layer.apply(params, x, e, mask, True), by_hand, atol=1e-5)


@pytest.mark.slow
def test_trainer_and_evaluation_feed_the_entity_vectors(entity_file, spm_path, tmp_path):
  finetune_runs.write_sst2(tmp_path / 'glue', 64, 16)
  config = finetune_runs.tiny(ernie_config.get_config('sst2'), spm_path, tmp_path / 'glue')
  # The fixture sentences mention 'film', 'story' and 'plot': entities of this file.
  path = str(tmp_path / 'entities.npz')
  rng = np.random.default_rng(0)
  knowledge.write_entity_vectors(path, [('film',), ('story',), ('plot',)],
                                 rng.normal(size=(3, 16)), ['r'], np.zeros((1, 16)))  # fmt: skip
  config.objective.entity_file = path
  result, run = finetune_runs.short_run(config, str(tmp_path / 'run'))
  table = knowledge.read_entity_vectors(path)
  tokenizer = tokenizers.load_tokenizer(spm_path)
  records = tasks.load_examples(config.data, 'dev')
  rows = [knowledge.encode_entities(tokenizer, r['text_a'], None, 32, entities=table)
          for r in records]  # fmt: skip
  batch = {k: np.stack([row[k] for row in rows]) for k in rows[0]}
  assert batch['entity_mask'].any(1).mean() > 0.5  # Most sentences mention one.
  model = entity_fusion.EntityFusionClassifier(run.model_cfg, 2, 16)
  logits = jax.jit(
    lambda vectors: model.apply({'params': run.params}, batch['tokens'], batch['segment_ids'],
                                batch['positions'], batch['token_types'],
                                entity_vectors=vectors, entity_mask=batch['entity_mask'])
  )  # fmt: skip
  with_vectors = np.asarray(logits(batch['entity_vectors']))
  without = np.asarray(logits(np.zeros_like(batch['entity_vectors'])))
  # A sentence's logits move with its mentions' vectors, and only then.
  moved = np.abs(with_vectors - without).max(-1)
  mentions = batch['entity_mask'].any(1)
  assert (moved[mentions] > 0).all() and (moved[~mentions] == 0).all()
  labels = np.array([r['label'] for r in records])
  assert result['step'] == 8
  assert result['metrics']['accuracy'] == pytest.approx(np.mean(with_vectors.argmax(-1) == labels))
