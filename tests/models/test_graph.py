"""Graph layers (models/graph.py) and token graphs (data/graphs.py): GCN's normalized
propagation by hand, GAT's attention only over neighbours (rows summing to 1), padding
that never reaches a real token, the co-occurrence graph by hand, and a short
configs/graph.py run through the trainer."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from configs import graph as graph_config
from data import graphs
from models import graph
from models.transformer_config import TransformerConfig
from tests.training import finetune_runs

CFG = TransformerConfig(vocab_size=8, num_layers=1, d_model=4, num_heads=2, mlp_dim=8)
X = np.random.default_rng(0).normal(size=(1, 4, 3)).astype(np.float32)
ADJ = np.array([[[0, 1, 0, 1], [1, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0]]], np.uint8)
MASK = np.array([[1, 1, 1, 0]], bool)  # Node 3 is padding.


def test_gcn_is_the_normalized_propagation_by_hand():
  layer = graph.GraphConvolution(CFG, 5)
  params = nn.unbox(layer.init(jax.random.key(0), X, ADJ, MASK))
  out = np.asarray(layer.apply(params, X, ADJ, MASK))
  a = np.array([[1, 1, 0], [1, 1, 1], [0, 1, 1]], np.float32)  # Real nodes, self-loops added.
  d = a.sum(1) ** -0.5
  w, b = params['params']['dense']['kernel'], params['params']['dense']['bias']
  by_hand = jax.nn.gelu((d[:, None] * a * d[None, :]) @ (X[0, :3] @ w + b))
  np.testing.assert_allclose(out[0, :3], by_hand, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(out[0, 3], 0.0)  # Padding outputs zeros.


@pytest.mark.parametrize('kind', ['gcn', 'gat'])
def test_padding_never_reaches_a_real_token(kind):
  layer = graph.GraphConvolution(CFG, 4) if kind == 'gcn' else graph.GraphAttention(CFG, 4, heads=2)
  params = layer.init(jax.random.key(1), X, ADJ, MASK)
  other = X.copy()
  other[0, 3] = 100.0  # Whatever the padding node holds.
  a = layer.apply(params, X, ADJ, MASK)
  b = layer.apply(params, other, ADJ, MASK)
  np.testing.assert_allclose(a[0, :3], b[0, :3], rtol=1e-6)


def test_gat_attends_only_to_neighbours():
  layer = graph.GraphAttention(CFG, 4, heads=2)
  params = layer.init(jax.random.key(2), X, ADJ, MASK)
  _, state = layer.apply(params, X, ADJ, MASK, mutable=['intermediates'])
  (weights,) = state['intermediates']['attention']  # [b, i, j, heads]
  weights = np.asarray(weights)[0]
  allowed = np.array([[1, 1, 0, 0], [1, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]], bool)
  assert (weights[~allowed] == 0).all()
  np.testing.assert_allclose(weights[:3].sum(1), 1.0, rtol=1e-6)
  assert (weights[:3][allowed[:3]] > 0).all()


def test_cooccurrence_graph_by_hand():
  tokens = np.array([1, 5, 6, 5, 2, 7, 2, 0])
  segments = np.array([1, 1, 1, 1, 1, 2, 2, 0])
  adj = graphs.cooccurrence_adjacency(tokens, segments, window=1)
  expected = np.zeros((8, 8), np.uint8)
  for i, j in [(0, 1), (1, 2), (2, 3), (3, 4), (5, 6), (1, 3)]:  # Window 1, and the two 5s.
    expected[i, j] = expected[j, i] = 1
  np.testing.assert_array_equal(adj, expected)  # 2 at 4 and 6: other segments, no edge.
  assert graphs.cooccurrence_adjacency(tokens, segments, 0, same_token=False).sum() == 0
  with pytest.raises(ValueError, match='must be >= 0'):
    graphs.cooccurrence_adjacency(tokens, segments, -1)


@pytest.mark.slow
def test_graph_classifier_trains_through_the_trainer(spm_path, tmp_path):
  finetune_runs.write_sst2(tmp_path, 320, 48)
  config = finetune_runs.tiny(graph_config.get_config('sst2,gat'), spm_path, tmp_path)
  config.total_steps, config.eval_every_steps, config.checkpoint_every_steps = 40, 40, 40
  config.optimizer.learning_rate, config.optimizer.warmup_steps = 3e-3, 4
  config.optimizer.warmup_ratio, config.model.dropout_rate = 0.0, 0.0
  before, result = finetune_runs.train_and_evaluate(config, str(tmp_path / 'run'))
  assert result['scores']['sst2'] >= 0.85 > before['scores']['sst2'] + 0.2, (before, result)
