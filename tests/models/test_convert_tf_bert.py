"""`--from tf-bert`: a google-research/bert TF1 checkpoint, written here, against transformers.

The test writes a random transformers BERT's weights under the original
release's variable names (tf.compat.v1 Saver in graph mode, as BERT's
run_pretraining.py saved them, with Adam slots and global_step), converts it,
and compares our outputs with the transformers model's.
"""

import json
import os

import numpy as np
import pytest

os.environ.setdefault('USE_TF', '0')  # transformers itself needs no TensorFlow here.
REASON = 'the TF BERT test needs torch and transformers: pip install -r requirements-parity.txt'
torch = pytest.importorskip('torch', reason=REASON)
transformers = pytest.importorskip('transformers', reason=REASON)

from models.convert import __main__ as cli  # noqa: E402
from models.convert import converted, tf_bert, verify  # noqa: E402

LAYERS = 2


def _tf_names(layers: int) -> dict[str, tuple[str, bool]]:
  """Original variable name -> (transformers name, transposed), spelled out by hand."""
  names = {
    'bert/embeddings/word_embeddings': ('bert.embeddings.word_embeddings.weight', False),
    'bert/embeddings/position_embeddings': ('bert.embeddings.position_embeddings.weight', False),
    'bert/embeddings/token_type_embeddings': (
      'bert.embeddings.token_type_embeddings.weight',
      False,
    ),
    'bert/embeddings/LayerNorm/gamma': ('bert.embeddings.LayerNorm.weight', False),
    'bert/embeddings/LayerNorm/beta': ('bert.embeddings.LayerNorm.bias', False),
    'bert/pooler/dense/kernel': ('bert.pooler.dense.weight', True),
    'bert/pooler/dense/bias': ('bert.pooler.dense.bias', False),
    'cls/predictions/transform/dense/kernel': ('cls.predictions.transform.dense.weight', True),
    'cls/predictions/transform/dense/bias': ('cls.predictions.transform.dense.bias', False),
    'cls/predictions/transform/LayerNorm/gamma': (
      'cls.predictions.transform.LayerNorm.weight',
      False,
    ),
    'cls/predictions/transform/LayerNorm/beta': ('cls.predictions.transform.LayerNorm.bias', False),
    'cls/predictions/output_bias': ('cls.predictions.bias', False),
    'cls/seq_relationship/output_weights': ('cls.seq_relationship.weight', False),
    'cls/seq_relationship/output_bias': ('cls.seq_relationship.bias', False),
  }
  for i in range(layers):
    tf_layer, hf_layer = f'bert/encoder/layer_{i}', f'bert.encoder.layer.{i}'
    for tf_part, hf_part in [
      ('attention/self/query', 'attention.self.query'),
      ('attention/self/key', 'attention.self.key'),
      ('attention/self/value', 'attention.self.value'),
      ('attention/output/dense', 'attention.output.dense'),
      ('intermediate/dense', 'intermediate.dense'),
      ('output/dense', 'output.dense'),
    ]:
      names[f'{tf_layer}/{tf_part}/kernel'] = (f'{hf_layer}.{hf_part}.weight', True)
      names[f'{tf_layer}/{tf_part}/bias'] = (f'{hf_layer}.{hf_part}.bias', False)
    for tf_part, hf_part in [
      ('attention/output/LayerNorm', 'attention.output.LayerNorm'),
      ('output/LayerNorm', 'output.LayerNorm'),
    ]:
      names[f'{tf_layer}/{tf_part}/gamma'] = (f'{hf_layer}.{hf_part}.weight', False)
      names[f'{tf_layer}/{tf_part}/beta'] = (f'{hf_layer}.{hf_part}.bias', False)
  return names


@pytest.fixture(scope='module')
def tf():
  """TensorFlow, imported by the tests that write a checkpoint (about 6 s), not when every
  pytest worker collects this module."""
  return pytest.importorskip('tensorflow', reason='the TF BERT test needs tensorflow')


def _write_tf_checkpoint(tf, prefix: str, arrays: dict[str, np.ndarray]) -> None:
  graph = tf.Graph()
  with graph.as_default():
    variables = [tf.compat.v1.Variable(value, name=name) for name, value in arrays.items()]
    saver = tf.compat.v1.train.Saver(variables)
    with tf.compat.v1.Session(graph=graph) as session:
      session.run(tf.compat.v1.global_variables_initializer())
      saver.save(session, prefix)


def test_tf_bert_checkpoint_matches_transformers(tmp_path, tf):
  config = transformers.BertConfig(
    vocab_size=101,
    hidden_size=32,
    num_hidden_layers=LAYERS,
    num_attention_heads=4,
    intermediate_size=37,
    max_position_embeddings=48,
    initializer_range=0.3,
  )
  torch.manual_seed(0)
  model = transformers.BertForPreTraining(config).eval()
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.1 * torch.randn_like(p))
  model.save_pretrained(tmp_path / 'hf')  # What verify runs transformers on.
  state = {k: v.numpy() for k, v in model.state_dict().items()}
  arrays = {
    tf_name: state[name].T if t else state[name] for tf_name, (name, t) in _tf_names(LAYERS).items()
  }
  arrays['bert/embeddings/word_embeddings/adam_m'] = np.zeros_like(
    arrays['bert/embeddings/word_embeddings']
  )
  arrays['global_step'] = np.int64(1000)
  release = tmp_path / 'uncased_L-2_H-32_A-4'
  release.mkdir()
  _write_tf_checkpoint(tf, str(release / 'bert_model.ckpt'), arrays)
  assert set(
    tf.train.load_checkpoint(str(release / 'bert_model.ckpt')).get_variable_to_shape_map()
  ) == set(arrays)
  keys = (
    'vocab_size',
    'hidden_size',
    'num_hidden_layers',
    'num_attention_heads',
    'intermediate_size',
  )
  keys += ('max_position_embeddings', 'type_vocab_size', 'initializer_range', 'hidden_act')
  keys += ('hidden_dropout_prob', 'attention_probs_dropout_prob')
  (release / 'bert_config.json').write_text(json.dumps({k: getattr(config, k) for k in keys}))
  (release / 'vocab.txt').write_text('[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n')

  out = str(tmp_path / 'ours')
  with pytest.warns(UserWarning, match='2 source tensors were not converted'):
    assert cli.main(['--from', 'tf-bert', str(release), out]) == 0
  c = converted.load(out)
  assert [u.split(' ')[0] for u in c.unconverted] == [
    'cls.seq_relationship.bias',
    'cls.seq_relationship.weight',
  ]
  assert c.ignored == ['bert/embeddings/word_embeddings/adam_m', 'global_step']
  assert c.heads == ['backbone', 'masked_lm'] and c.tokenizer_files == ['vocab.txt']
  diffs = verify.compare(str(tmp_path / 'hf'), c)
  print('parity tf-bert: ' + ', '.join(f'{k} {v:.2e}' for k, v in diffs.items()))
  assert set(diffs) == {'hidden', 'pooled', 'logits'} and max(diffs.values()) < 1e-4, diffs


def test_tf_names_map_onto_transformers_names():
  for tf_name, expected in _tf_names(1).items():
    assert tf_bert.hf_name(tf_name) == expected, tf_name
