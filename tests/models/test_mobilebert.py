"""MobileBERT on the one stack: transformers parity, the released parameter count, the
trigram input within packed segments, and the fields' error messages.

Parity: a seeded transformers MobileBertModel with the released structure (trigram
input, shared query/key bottleneck, 4 stacked FFNs, NoNorm) at small widths, every
NoNorm and the [PAD] row randomized (fresh ones are 1, 0 and zeros, which would hide a
swapped or missing tensor), saved, converted by the command line with --verify at
1e-5 in float32, exported back bit-exactly; the use_bottleneck_attention variant (the
paper's MobileBERT-TINY block) is compared too.
"""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models import heads, presets, transformer

os.environ.setdefault('USE_TF', '0')  # Keep transformers from importing TensorFlow.
REASON = 'parity tests need torch and transformers: pip install -r requirements-parity.txt'

TOL = 1e-5
SMALL = dict(
  vocab_size=101,
  hidden_size=64,
  num_hidden_layers=2,
  num_attention_heads=4,
  intermediate_size=48,
  embedding_size=16,
  intra_bottleneck_size=32,
  max_position_embeddings=48,
  initializer_range=0.05,
)


def _random_mobilebert(transformers, torch, **overrides):
  """A seeded MobileBertModel whose NoNorms and [PAD] embedding are not their init values."""
  torch.manual_seed(0)
  model = transformers.MobileBertModel(transformers.MobileBertConfig(**{**SMALL, **overrides}))
  with torch.no_grad():
    for name, p in model.named_parameters():
      if 'LayerNorm' in name:  # NoNorm: x * weight + bias.
        p.normal_(1.0 if name.endswith('weight') else 0.0, 0.1)
    model.embeddings.word_embeddings.weight[0].normal_(0.0, 0.05)  # Padding neighbours read it.
  return model.eval()


@pytest.fixture(scope='module')
def hf_libs():
  torch = pytest.importorskip('torch', reason=REASON)
  transformers = pytest.importorskip('transformers', reason=REASON)
  return torch, transformers


def test_cli_imports_and_verifies_the_released_structure(hf_libs, tmp_path, capsys):
  from models.convert import __main__ as cli
  from models.convert import converted, hf

  torch, transformers = hf_libs
  original = _random_mobilebert(transformers, torch)
  src, out, back = (str(tmp_path / n) for n in ('hf', 'ours', 'back'))
  original.save_pretrained(src)
  argv = ['--from', 'hf', '--family', 'mobilebert', src, out, '--verify', '--tolerance', str(TOL)]
  assert cli.main(argv) == 0
  printed = capsys.readouterr().out
  assert 'verify: OK' in printed and 'of pooled' in printed, printed
  c = converted.load(out)
  assert c.unconverted == [] and c.heads == ['backbone']
  cfg = c.config
  assert (cfg.bottleneck_dim, cfg.shared_qk_bottleneck, cfg.num_mlps) == (32, True, 4)
  assert (cfg.embed_trigram, cfg.token_dim, cfg.norm, cfg.kv_dim) == (True, 16, 'affine', 8)
  block = c.params['encoder']['block_1']
  assert block['mlp_3']['wo']['kernel'].shape == (48, 32)  # The layer's own output.dense.
  np.testing.assert_array_equal(  # ffn.0 runs first: it is our 'mlp'.
    block['mlp']['wi']['kernel'],
    original.encoder.layer[1].ffn[0].intermediate.dense.weight.detach().numpy().T,
  )

  # Export: every tensor back under its transformers name, bit for bit.
  hf.export_hf(c, back)
  reloaded = transformers.MobileBertModel.from_pretrained(back).state_dict()
  for name, value in original.state_dict().items():
    assert torch.equal(reloaded[name], value), name


def test_bottleneck_attention_variant_matches_transformers(hf_libs, tmp_path):
  """use_bottleneck_attention: queries, keys and values all read the 32-wide bottleneck;
  transformers still holds an unused `bottleneck.attention`, which is listed, not used."""
  from models.convert import converted, hf, verify

  torch, transformers = hf_libs
  original = _random_mobilebert(
    transformers, torch, use_bottleneck_attention=True, num_feedforward_networks=2
  )
  original.save_pretrained(tmp_path / 'hf')
  with pytest.warns(UserWarning, match='not converted'):
    c = hf.import_hf(str(tmp_path / 'hf'), str(tmp_path / 'ours'))
  assert not c.config.shared_qk_bottleneck and c.config.num_mlps == 2
  assert len(c.unconverted) == 2 * 4 and all('bottleneck.attention' in u for u in c.unconverted)
  diffs = verify.compare(str(tmp_path / 'hf'), converted.load(str(tmp_path / 'ours')))
  assert set(diffs) == {'hidden', 'pooled'} and max(diffs.values()) < TOL, diffs
  # The comparison can fail: NoNorm's scale and bias of one layer swapped.
  bad = converted.load(str(tmp_path / 'ours'))
  norm = bad.params['encoder']['block_0']['mlp_norm']
  norm['scale'], norm['bias'] = norm['bias'], norm['scale']
  assert verify.compare(str(tmp_path / 'hf'), bad)['hidden'] > 1e-3


def test_released_parameter_count(hf_libs):
  torch, transformers = hf_libs
  with torch.device('meta'):  # Shapes only: no memory, no init.
    released = transformers.MobileBertModel(transformers.MobileBertConfig())
  count = sum(p.numel() for p in released.parameters())
  assert count == 24_844_544  # google/mobilebert-uncased with its pooler (the paper: 25.3M).
  assert presets.count_params(presets.get_config('mobilebert')) == count


def test_trigram_is_next_own_previous_and_stays_in_its_segment():
  x = jnp.arange(1.0, 6.0).reshape(1, 5, 1)  # [batch, length, E=1]: tokens 1..5.
  np.testing.assert_array_equal(
    transformer.trigram(x)[0],
    [[2, 1, 0], [3, 2, 1], [4, 3, 2], [5, 4, 3], [0, 5, 4]],
  )
  # Two packed documents, then padding: a document never sees the other; its last token
  # sees the padding, as in an unpacked padded row (what padding sees does not matter).
  segments = jnp.array([[1, 1, 2, 2, 0]])
  np.testing.assert_array_equal(
    transformer.trigram(x, segments)[0],
    [[2, 1, 0], [0, 2, 1], [4, 3, 0], [5, 4, 3], [0, 5, 0]],
  )


@pytest.fixture(scope='module')
def tiny():
  cfg = presets.get_config('mobilebert-tiny', vocab_size=97)
  tokens = (jnp.arange(14, dtype=jnp.int32).reshape(2, 7) * 5 + 3) % 97
  model = heads.Backbone(cfg)
  params = model.init(jax.random.key(0), tokens, jnp.ones_like(tokens))['params']
  return cfg, model, nn.unbox(params), tokens


def test_a_packed_document_does_not_see_its_neighbour(tiny):
  """Rows [a | b], [a | c], [d | b] (4 + 3 tokens): a's states are the same next to b or
  c, and b's next to a or d, the trigram input included."""
  cfg, model, params, tokens = tiny
  a, b = tokens[0, :4], tokens[0, 4:]
  c, d = tokens[1, 4:], tokens[1, :4]
  rows = jnp.stack([jnp.concatenate(pair) for pair in ((a, b), (a, c), (d, b))])  # [3, 7]
  segments = jnp.array([[1, 1, 1, 1, 2, 2, 2]] * 3)
  positions = jnp.array([[0, 1, 2, 3, 0, 1, 2]] * 3)
  hidden, _ = model.apply({'params': params}, rows, segments, positions)
  np.testing.assert_allclose(hidden[1, :4], hidden[0, :4], atol=1e-5)
  np.testing.assert_allclose(hidden[2, 4:], hidden[0, 4:], atol=1e-5)
  assert not np.allclose(hidden[1, 4:], hidden[0, 4:], atol=1e-3)  # Different documents.


def test_feature_and_attention_maps_for_distillation(tiny):
  """MobileBERT's feature-map transfer reads each block's d_model-wide output; its
  attention transfer the queries and keys, 4 heads of bottleneck_dim / 4."""
  cfg, model, params, tokens = tiny
  _, state = model.apply(
    {'params': params}, tokens, jnp.ones_like(tokens), mutable=['intermediates']
  )
  block = state['intermediates']['encoder']['block_1']
  assert block['output'][0].shape == (2, 7, 128)  # [batch, length, d_model]
  assert block['attention']['queries'][0].shape == (2, 7, 4, 8)  # [batch, length, heads, kv]
  assert block['attention']['values'][0].shape == (2, 7, 4, 8)
  assert set(params['encoder']['block_0']) == {
    'bottleneck_in', 'bottleneck_in_norm', 'bottleneck_qk', 'bottleneck_qk_norm', 'attention',
    'attention_norm', 'mlp', 'mlp_norm', 'mlp_1', 'mlp_1_norm', 'mlp_2', 'mlp_2_norm', 'mlp_3',
    'mlp_3_norm', 'bottleneck_out', 'bottleneck_out_norm',
  }  # fmt: skip


@pytest.mark.parametrize(
  'fields, message',
  [
    (dict(num_mlps=0), 'num_mlps=0'),
    (dict(bottleneck_dim=0), 'shared_qk_bottleneck=True needs bottleneck_dim'),
    (dict(pre_norm=True), 'pre_norm must be False'),
    (dict(norm='batch'), "Unknown norm 'batch'"),
  ],
)
def test_bad_fields_are_named(fields, message):
  cfg = presets.get_config('mobilebert-tiny', vocab_size=97, **fields)
  tokens = jnp.ones((1, 4), jnp.int32)
  with pytest.raises(ValueError, match=message):
    jax.eval_shape(lambda: heads.Backbone(cfg).init(jax.random.key(0), tokens, tokens))


def test_unrunnable_transformers_config_is_refused():
  from models.convert import mobilebert

  with pytest.raises(ValueError, match='needs use_bottleneck_attention or key_query_shared'):
    mobilebert.config_from_hf({'key_query_shared_bottleneck': False})
  with pytest.raises(ValueError, match='trigram_input=False with embedding_size=128'):
    mobilebert.config_from_hf({'trigram_input': False})
  # transformers' defaults are google/mobilebert-uncased's config: they give our preset
  # (the pooler is read from the weights on import).
  assert mobilebert.config_from_hf({}) == presets.get_config('mobilebert', pooler=False)
