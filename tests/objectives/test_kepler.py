"""KEPLER (objectives/kepler.py): the descriptions file, the negative-sampling loss by hand,
triples drawn per row as a function of (seed, epoch, example id) with their description
rows, the loss as MLM + weight x KE with KE by hand from the model's description
embeddings, and a short pretraining run (8 devices) that logs and evaluates both parts."""

import json

import flax.linen as nn
import jax
import numpy as np
import pytest

from configs import base
from configs import kepler as kepler_config
from data import python_knowledge, tasks, tokenizers
from evaluation import during_training
from models.transformer_config import TransformerConfig
from objectives import api, kepler
from objectives.shared import transe
from training import compressed_run

KG = """python\tis_a\tprogramming language
list\tpart_of\tpython
dict\tpart_of\tpython
string\tpart_of\tpython
module\tpart_of\tpython
"""
DESCRIPTIONS = """python\ta high-level language with dynamic typing
list\ta mutable sequence of items
"""


@pytest.fixture
def files(tmp_path):
  (tmp_path / 'kg.tsv').write_text(KG, encoding='utf-8')
  (tmp_path / 'descriptions.tsv').write_text(DESCRIPTIONS, encoding='utf-8')
  return str(tmp_path / 'kg.tsv'), str(tmp_path / 'descriptions.tsv')


def _objective(files, **keys):
  config = kepler_config.get_config()
  config.objective.knowledge_file, config.objective.entity_descriptions = files
  for key, value in keys.items():
    config.objective[key] = value
  return api.load(config.objective.module, config.objective), config


def test_descriptions_file_and_the_loss_by_hand(files, tmp_path):
  assert kepler.read_descriptions(files[1]) == {
    ('python',): 'a high-level language with dynamic typing',
    ('list',): 'a mutable sequence of items',
  }
  (tmp_path / 'bad.tsv').write_text('python\n', encoding='utf-8')
  with pytest.raises(ValueError, match=r'bad.tsv:1: a description is entity<TAB>text'):
    kepler.read_descriptions(str(tmp_path / 'bad.tsv'))
  positive, negative = np.array([1.0, 6.0]), np.array([5.0, 2.0])
  mean, total = transe.negative_sampling_loss(positive, negative, 4.0, np.array([1.0, 0.0]))
  sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
  by_hand = -np.log(sig(4.0 - 1.0)) - np.log(sig(5.0 - 4.0))  # The second pair weighs 0.
  assert float(total) == pytest.approx(by_hand, rel=1e-6) and float(mean) == pytest.approx(by_hand)


def test_rows_draw_triples_and_the_loss_is_mlm_plus_ke(files, spm_path):
  objective, config = _objective(files, ke_weight=0.5, ke_length=12)
  tokenizer = tokenizers.load_tokenizer(spm_path)
  rng = np.random.default_rng(0)
  rows = {
    'tokens': rng.integers(10, 900, (4, 16)).astype(np.int32),
    'segment_ids': np.ones((4, 16), np.int32),
    'positions': np.tile(np.arange(16, dtype=np.int32), (4, 1)),
    'epoch': np.zeros(4, np.int64),
    'example_id': np.arange(4, dtype=np.int64),
  }
  rows['segment_ids'][3] = 0  # An eval padding row.
  preprocess = objective.make_preprocess(config.objective, tokenizer, seed=0)
  batch = preprocess(rows)
  again = preprocess(rows)
  for name in batch:
    np.testing.assert_array_equal(batch[name], again[name], err_msg=name)
  other = preprocess(dict(rows, epoch=np.ones(4, np.int64)))
  assert any((other[f'ke_{p}'] != batch[f'ke_{p}']).any() for p in ('head', 'tail', 'negative'))
  entities, relations, triples = objective.vocabulary
  assert relations == ['is a', 'part of'] and len(entities) == 6
  described = {
    e: tasks.encode_pair(tokenizer, text, None, 12)['tokens']
    for e, text in ((('python',), DESCRIPTIONS.split('\n')[0].split('\t')[1]),
                    (('programming', 'language'), 'programming language'))
  }  # fmt: skip
  for i in range(4):  # Each row's head, relation and tail are one triple's.
    match = [t for t in triples if (batch['ke_relation'][i] == t[1])
             and (batch['ke_head'][i] == objective.description_rows(tokenizer)['tokens'][t[0]]).all()
             and (batch['ke_tail'][i] == objective.description_rows(tokenizer)['tokens'][t[2]]).all()]  # fmt: skip
    assert match, i
  rows_of = objective.description_rows(tokenizer)['tokens']
  np.testing.assert_array_equal(rows_of[entities.index(('python',))], described[('python',)])
  np.testing.assert_array_equal(
    rows_of[entities.index(('programming', 'language'))], described[('programming', 'language')]
  )  # No description: the name.
  assert batch['ke_weight'].tolist() == [1, 1, 1, 0]
  # The loss: MLM's + 0.5 x KE, KE by hand from the model's description embeddings.
  cfg = TransformerConfig(vocab_size=1000, num_layers=1, d_model=16, num_heads=2, mlp_dim=32,
                          dropout_rate=0.0, attention_dropout_rate=0.0)  # fmt: skip
  model = objective.build_model(cfg)
  params = nn.unbox(model.init(jax.random.key(0), *model.init_inputs(16)[:3]))['params']
  total, metrics = jax.jit(lambda p: objective.loss_fn(p, batch, None, model=model))(params)
  embed = lambda t, s: np.asarray(  # noqa: E731
    model.apply({'params': params}, t, s, method='describe')
  )
  h = embed(batch['ke_head'], batch['ke_head_segments'])
  t = embed(batch['ke_tail'], batch['ke_tail_segments'])
  n = embed(batch['ke_negative'], batch['ke_negative_segments'])
  r = np.asarray(params['relations'])[batch['ke_relation']]
  d_pos, d_neg = np.abs(h + r - t).sum(-1), np.abs(h + r - n).sum(-1)
  sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
  ke = (-np.log(sig(4.0 - d_pos)) - np.log(sig(d_neg - 4.0)))[:3].mean()
  mlm_loss = float(metrics['loss'][0] / metrics['loss'][1])
  assert float(metrics['ke/loss'][0] / metrics['ke/loss'][1]) == pytest.approx(ke, rel=1e-4)
  assert float(total) == pytest.approx(mlm_loss + 0.5 * ke, rel=1e-4)
  assert objective.loss_terms(config.objective) == {'loss': 1.0, 'ke/loss': 0.5}
  # The FLOP count's extra work per row: the three description rows (models/flops.py).
  assert api.side_passes(objective, config.objective, 16) == ((3, 12),)


def test_without_files_the_graph_is_python_s_builtins(spm_path):
  triples = python_knowledge.triples()
  assert ('ValueError', 'subclass of', 'Exception') in triples
  assert ('len', 'is a', 'built-in function') in triples
  assert (
    python_knowledge.descriptions()['ValueError']
    == 'Inappropriate argument value (of correct type).'
  )
  objective, config = _objective(('', ''))
  entities, relations, ids = objective.vocabulary
  assert len(ids) == len(triples) and set(relations) == {'subclass of', 'is a'}
  tokenizer = tokenizers.load_tokenizer(spm_path)
  row = objective.description_rows(tokenizer)['tokens'][entities.index(('valueerror',))]
  want = tasks.encode_pair(tokenizer, 'Inappropriate argument value (of correct type).', None, 32)
  np.testing.assert_array_equal(row, want['tokens'])


@pytest.mark.slow
def test_pretraining_logs_both_parts_through_the_trainer(files, spm_path, tmp_path):
  _, config = _objective(files)
  config.data.tokenizer_path = spm_path
  config.model.num_layers, config.model.d_model, config.model.num_heads = 2, 64, 2
  config.model.mlp_dim, config.seq_len, config.batch_size = 128, 64, 8
  config.total_steps = config.eval_every_steps = config.checkpoint_every_steps = 6
  config.log_every_steps, config.peak_flops_per_device = 3, 1e9
  workdir = str(tmp_path / 'run')
  during_training.train_and_evaluate(config, workdir)
  with open(f'{workdir}/metrics.jsonl') as f:
    logged = [json.loads(line) for line in f]
  train = [r for r in logged if 'total_loss' in r]
  assert [r['step'] for r in train] == [3, 6]
  for r in train:
    assert r['total_loss'] == pytest.approx(r['loss'] + r['ke/loss'], rel=1e-4)
    assert 0.0 <= r['ke/accuracy'] <= 1.0
  assert any('eval/ke/loss' in r for r in logged)
  params = compressed_run.read_run(workdir, base.get_config()).params
  assert params['relations'].shape == (2, 64) and np.isfinite(params['relations']).all()
