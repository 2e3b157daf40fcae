"""LoRA, prompt tuning and P-tuning v2 (models/transformer.py, configs/base.py `model.lora_*`,
`model.prompt_length`, `model.prefix_length`): a fresh LoRA model computes what the plain
one does and its update is (alpha / r) x A B by hand; soft prompts join the first segment,
are seen by its tokens and never by padding, and leave the outputs' length as it was;
per-layer key/value prefixes are seen by every real query of every segment (causal and
relative-position stacks included), their attention equal to a softmax by hand; a
fine-tuning run through
train.py with the backbone frozen trains only the new parameters and the head (the
backbone bit-identical, no optimizer state for it) and logs how many it trains."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import glue as glue_config
from evaluation import during_training
from models import heads, presets
from tests.training.finetune_runs import tiny, write_sst2
from training import adaptation, checkpointing

VOCAB = 64


def _cfg(**fields):
  return presets.get_config(
    'bert-base', vocab_size=VOCAB, num_layers=2, d_model=32, num_heads=2, mlp_dim=64,
    max_len=32, **fields,
  )  # fmt: skip


def _inputs():
  tokens = jnp.asarray(np.random.default_rng(0).integers(5, VOCAB, (2, 8)), jnp.int32)
  segments = jnp.asarray([[1] * 8, [1] * 5 + [0] * 3], jnp.int32)
  return tokens, segments


def _flat(tree) -> dict:
  return {adaptation.path_name(p): x for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def test_fresh_lora_is_the_plain_model_and_its_update_is_a_times_b():
  tokens, segments = _inputs()
  plain = heads.SequenceClassifier(_cfg(), 2)
  lora = heads.SequenceClassifier(_cfg(lora_rank=4, lora_alpha=8.0), 2)
  params = nn.unbox(lora.init(jax.random.key(0), tokens, segments)['params'])
  names = _flat(params)
  added = {n for n in names if 'lora_' in n}
  assert added == {f'encoder/block_{i}/attention/{m}/lora_{ab}' for i in range(2)
                   for m in ('query', 'value') for ab in 'ab'}  # fmt: skip
  assert names['encoder/block_0/attention/query/lora_a'].shape == (32, 4)
  assert names['encoder/block_0/attention/query/lora_b'].shape == (4, 2, 16)
  base = jax.tree_util.tree_map(lambda x: x, params)
  for i in range(2):
    for m in ('query', 'value'):
      for ab in 'ab':
        del base['encoder'][f'block_{i}']['attention'][m][f'lora_{ab}']
  want = plain.apply({'params': base}, tokens, segments)
  np.testing.assert_array_equal(lora.apply({'params': params}, tokens, segments), want)

  # With B set, a layer's query moves by (alpha / r) x (x A) B: seen in the sown queries.
  rng = np.random.default_rng(1)
  b = rng.normal(size=(4, 2, 16)).astype(np.float32)
  params['encoder']['block_0']['attention']['query']['lora_b'] = jnp.asarray(b)
  _, sown = lora.apply({'params': params}, tokens, segments, mutable='intermediates')
  _, plain_sown = plain.apply({'params': base}, tokens, segments, mutable='intermediates')
  q = sown['intermediates']['encoder']['block_0']['attention']['queries'][0]
  q0 = plain_sown['intermediates']['encoder']['block_0']['attention']['queries'][0]
  x = sown['intermediates']['encoder']['embedded'][0]  # Block 0's input (post-LN BERT).
  a = np.asarray(names['encoder/block_0/attention/query/lora_a'])
  np.testing.assert_allclose(q - q0, 2.0 * np.einsum('ble,er,rhd->blhd', x, a, b), atol=1e-4)


def test_soft_prompts_join_the_first_segment_and_leave_the_length():
  tokens, segments = _inputs()
  model = heads.Backbone(_cfg(prompt_length=3))
  variables = model.init(jax.random.key(0), tokens, segments)
  params = nn.unbox(variables['params'])
  assert params['encoder']['prompt'].shape == (3, 32)
  (out, _), weights = model.apply(
    {'params': params}, tokens, segments, mutable='attention_weights'
  )  # Backbone: (states, pooled).
  assert out.shape == (2, 8, 32)
  probs = np.asarray(weights['attention_weights']['encoder']['block_0']['attention']['probs'][0])
  assert probs.shape == (2, 2, 11, 11)  # [batch, heads, 3 + 8, 3 + 8]
  # Every real token of row 1 attends to the prompts; the padding keys get nothing.
  assert np.all(probs[1, :, 3:8, :3].sum(-1) > 0)
  assert np.all(probs[1, :, :8, 8:] == 0)
  # The prompts move the outputs, and moving a prompt vector moves them again.
  without = dict(params, encoder={k: v for k, v in params['encoder'].items() if k != 'prompt'})
  plain, _ = heads.Backbone(_cfg()).apply({'params': without}, tokens, segments)
  assert not np.allclose(out, plain, atol=1e-3)
  params['encoder']['prompt'] = params['encoder']['prompt'] + 1.0
  assert not np.allclose(model.apply({'params': params}, tokens, segments)[0], out, atol=1e-3)


def test_prefixes_are_seen_by_every_real_query_and_attend_as_by_hand():
  tokens, _ = _inputs()
  segments = jnp.asarray([[1] * 4 + [2] * 4, [1] * 5 + [0] * 3], jnp.int32)  # Row 0 packed.
  for causal in (False, True):
    model = heads.Backbone(_cfg(prefix_length=3, causal=causal))
    params = nn.unbox(model.init(jax.random.key(0), tokens, segments)['params'])
    names = _flat(params)
    added = {n for n in names if 'prefix_' in n}
    assert added == {f'encoder/block_{i}/attention/prefix_{kv}' for i in range(2)
                     for kv in ('key', 'value')}  # fmt: skip
    assert names['encoder/block_1/attention/prefix_key'].shape == (3, 2, 16)
    (out, _), state = model.apply(
      {'params': params}, tokens, segments, mutable=('attention_weights', 'intermediates')
    )
    assert out.shape == (2, 8, 32)
    layer = state['attention_weights']['encoder']['block_1']['attention']
    probs = np.asarray(layer['probs'][0])  # [batch, heads, 8, 3 + 8]
    assert probs.shape == (2, 2, 8, 11)
    # By hand from the layer's sown queries and keys: the prefix keys first, then the keys
    # of the query's own segment (at or before it when causal); padding queries excluded.
    sown = state['intermediates']['encoder']['block_1']['attention']
    q, k = np.asarray(sown['queries'][0]), np.asarray(sown['keys'][0])
    prefix_k = np.broadcast_to(
      np.asarray(params['encoder']['block_1']['attention']['prefix_key']), (2, 3, 2, 16)
    )
    logits = np.einsum('bqhd,bkhd->bhqk', q, np.concatenate([prefix_k, k], 1)) / 4.0
    seg = np.asarray(segments)
    allowed = (seg[:, :, None] == seg[:, None, :]) & (seg[:, None, :] > 0)
    if causal:
      allowed &= np.tril(np.ones((8, 8), bool))[None]
    allowed = np.concatenate([np.broadcast_to((seg > 0)[:, :, None], (2, 8, 3)), allowed], -1)
    logits = np.where(allowed[:, None], logits, -1e30)
    expected = np.exp(logits - logits.max(-1, keepdims=True))
    expected /= expected.sum(-1, keepdims=True)
    real = seg > 0  # [batch, q]
    np.testing.assert_allclose(
      probs.transpose(0, 2, 1, 3)[real], expected.transpose(0, 2, 1, 3)[real], atol=1e-5
    )
    assert np.all(probs[0, :, 4:, :3].sum(-1) > 0)  # The packed row's second segment too.
    without = {k: v for k, v in names.items() if 'prefix_' not in k}
    assert set(without) == set(_flat(nn.unbox(heads.Backbone(_cfg(causal=causal)).init(
      jax.random.key(0), tokens, segments)['params'])))  # fmt: skip


def test_prefixes_in_an_encoder_decoder_with_relative_positions():
  cfg = presets.get_config(
    't5-small', vocab_size=VOCAB, num_layers=1, num_decoder_layers=1, d_model=32, num_heads=2,
    head_dim=16, mlp_dim=64, prefix_length=2,
  )  # fmt: skip
  model = heads.Seq2SeqLM(cfg)
  tokens, segments = _inputs()
  positions = jnp.broadcast_to(jnp.arange(8), (2, 8))
  rows = (tokens, segments, positions) * 2  # Encoder and decoder rows.
  params = nn.unbox(model.init(jax.random.key(0), *rows)['params'])
  names = {n for n in _flat(params) if 'prefix_' in n}
  # The encoder's and the decoder's self-attention; never cross-attention.
  assert names == {f'{stack}/block_0/attention/prefix_{kv}' for stack in ('encoder', 'decoder')
                   for kv in ('key', 'value')}, names  # fmt: skip
  logits, weights = model.apply({'params': params}, *rows, mutable='attention_weights')
  assert logits.shape == (2, 8, VOCAB) and np.isfinite(np.asarray(logits)).all()
  decoder = weights['attention_weights']['decoder']['block_0']
  assert decoder['attention']['probs'][0].shape == (2, 2, 8, 10)  # Prefix + causal self.
  assert decoder['cross_attention']['probs'][0].shape == (2, 2, 8, 8)
  # The first decoder token sees its prefix besides itself (causal).
  assert np.all(np.asarray(decoder['attention']['probs'][0])[:, :, 0, :2].sum(-1) > 0)


@pytest.mark.parametrize(
  'method,overrides,freeze,new',
  [
    ('lora', {'model.lora_rank': 4}, '^encoder/(?!.*lora_)', 'lora_'),
    ('prompt', {'model.prompt_length': 4}, '^encoder/(?!prompt$)', 'encoder/prompt'),
    ('prefix', {'model.prefix_length': 4}, '^encoder/(?!.*prefix_)', 'prefix_'),
  ],
)
def test_a_frozen_backbone_trains_only_the_new_parameters(
  method, overrides, freeze, new, spm_path, tmp_path, capsys
):
  write_sst2(tmp_path / 'glue', 64, 16)
  config = tiny(glue_config.get_config('sst2'), spm_path, tmp_path / 'glue', **overrides)
  config.total_steps, config.eval_every_steps, config.checkpoint_every_steps = 6, 6, 3
  config.optimizer.freeze, config.optimizer.learning_rate = freeze, 1e-2
  config.keep_checkpoints = 2
  workdir = str(tmp_path / method)
  during_training.train_and_evaluate(config, workdir)
  printed = capsys.readouterr().out
  checkpointer = checkpointing.Checkpointer(workdir, keep=0, save_every=1, read_only=True)
  try:
    first, _, _ = checkpointer.restore_as_saved(3)
    last, _, _ = checkpointer.restore_as_saved(6)
  finally:
    checkpointer.close()
  opt_state = last['opt_state']
  first, last = _flat(jax.tree.map(np.asarray, first['params'])), _flat(last['params'])
  moved = {n for n in first if not np.array_equal(first[n], np.asarray(last[n]))}
  assert moved and all(new in n or not n.startswith('encoder/') for n in moved), moved
  assert {n for n in first if new in n} <= moved  # Every new parameter trains.
  trained = sum(x.size for n, x in first.items() if not n.startswith('encoder/') or new in n)
  total = sum(x.size for x in first.values())
  assert trained < total / 5
  # Adam's two moments for the trained parameters only (plus counters).
  held = sum(np.size(x) for x in jax.tree.leaves(opt_state))
  assert 2 * trained <= held < 2 * trained + 64, (held, trained)
  assert f'parameters: {trained:,} trained of {total:,}' in printed, printed[-2000:]
