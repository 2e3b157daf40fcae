"""Parity of models/convert with transformers: small random models of every family.

Each case builds a seeded transformers model (2 layers, 32 wide, vocab 101),
saves it, converts it with our code, runs both on padded batches at two
lengths (hidden states, pooled output, logits within 1e-4 in float32), exports
ours back to a Hugging Face directory that `from_pretrained` loads with the
original values, and re-imports that bit-exactly. Also: `.bin` files go through
`torch.load(weights_only=True)` only, and the command line runs end to end.
"""

import os
import pickle

import numpy as np
import pytest

os.environ.setdefault('USE_TF', '0')  # Keep transformers from importing TensorFlow.
REASON = 'parity tests need torch and transformers: pip install -r requirements-parity.txt'
torch = pytest.importorskip('torch', reason=REASON)
transformers = pytest.importorskip('transformers', reason=REASON)

from models.convert import __main__ as cli  # noqa: E402
from models.convert import checkpoint_io, converted, hf, mapping, verify  # noqa: E402

TOL = 1e-4
ENCODER = dict(
  vocab_size=101,
  hidden_size=32,
  num_hidden_layers=2,
  num_attention_heads=4,
  intermediate_size=37,
  max_position_embeddings=48,
  hidden_dropout_prob=0.15,
  attention_probs_dropout_prob=0.05,
  initializer_range=0.3,
)


def _bert():
  return transformers.BertForPreTraining(transformers.BertConfig(**ENCODER))


def _bert_untied_relu():
  config = transformers.BertConfig(**ENCODER, hidden_act='relu', tie_word_embeddings=False)
  return transformers.BertForMaskedLM(config)


def _roberta():
  return transformers.RobertaForMaskedLM(transformers.RobertaConfig(**ENCODER, type_vocab_size=1))


def _albert():
  config = transformers.AlbertConfig(**ENCODER, embedding_size=16)  # hidden_act gelu_new.
  return transformers.AlbertForPreTraining(config)


def _electra_discriminator():
  config = transformers.ElectraConfig(**ENCODER, embedding_size=16)  # E < hidden: projected.
  return transformers.ElectraForPreTraining(config)


def _electra_generator():
  config = transformers.ElectraConfig(**ENCODER, embedding_size=48)  # E > hidden, as released.
  return transformers.ElectraForMaskedLM(config)


def _distilbert():
  config = transformers.DistilBertConfig(
    vocab_size=101,
    dim=32,
    n_layers=2,
    n_heads=4,
    hidden_dim=37,
    max_position_embeddings=48,
    dropout=0.15,
    initializer_range=0.3,
  )
  return transformers.DistilBertForMaskedLM(config)


def _gpt2(**kw):
  config = transformers.GPT2Config(
    vocab_size=101, n_positions=48, n_embd=32, n_layer=2, n_head=4, initializer_range=0.3, **kw
  )
  return transformers.GPT2LMHeadModel(config)


def _t5(**kw):
  config = transformers.T5Config(
    vocab_size=101, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_decoder_layers=3,
    num_heads=4, relative_attention_num_buckets=8, relative_attention_max_distance=20,
    dropout_rate=0.15, **kw,
  )  # fmt: skip
  return transformers.T5ForConditionalGeneration(config)


def _bart():
  config = transformers.BartConfig(
    vocab_size=101, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
    decoder_attention_heads=4, encoder_ffn_dim=37, decoder_ffn_dim=37,
    max_position_embeddings=48, dropout=0.15,
  )  # fmt: skip
  return transformers.BartForConditionalGeneration(config)


def _gpt1():
  config = transformers.OpenAIGPTConfig(
    vocab_size=101, n_positions=48, n_embd=32, n_layer=2, n_head=4, initializer_range=0.3
  )
  return transformers.OpenAIGPTLMHeadModel(config)


# case -> (builder, family, HF classes to reload the export with, unconverted prefix or None).
CASES = {
  'bert': (_bert, 'bert', ('AutoModel', 'AutoModelForMaskedLM'), 'cls.seq_relationship.'),
  'bert-untied-relu': (_bert_untied_relu, 'bert', ('AutoModelForMaskedLM',), None),
  'roberta': (_roberta, 'roberta', ('AutoModelForMaskedLM',), None),
  'albert': (_albert, 'albert', ('AutoModel', 'AutoModelForMaskedLM'), 'sop_classifier.'),
  'electra-discriminator': (
    _electra_discriminator,
    'electra',
    ('AutoModel',),
    'discriminator_predictions.',
  ),
  'electra-generator': (_electra_generator, 'electra', ('AutoModelForMaskedLM',), None),
  'distilbert': (_distilbert, 'distilbert', ('AutoModelForMaskedLM',), None),
  'gpt2': (_gpt2, 'gpt2', ('AutoModelForCausalLM',), None),
  'gpt2-untied': (
    lambda: _gpt2(tie_word_embeddings=False, activation_function='gelu_pytorch_tanh'),
    'gpt2',
    ('AutoModelForCausalLM',),
    None,
  ),
  'gpt1': (_gpt1, 'openai-gpt', ('AutoModelForCausalLM',), None),  # Post-LN.
  't5': (_t5, 't5', ('AutoModelForSeq2SeqLM',), None),  # v1.0: ReLU, tied and rescaled.
  't5-v1_1': (
    lambda: _t5(feed_forward_proj='gated-gelu', tie_word_embeddings=False),
    't5',
    ('AutoModelForSeq2SeqLM',),
    None,
  ),
  'bart': (_bart, 'bart', ('AutoModelForSeq2SeqLM',), None),
}


def _random_model(builder, seed: int = 0):
  """A transformers model whose every parameter (LayerNorms and biases too) is random."""
  torch.manual_seed(seed)
  model = builder()
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.1 * torch.randn_like(p))
  return model.eval()


def _assert_same_params(a: converted.Converted, b: converted.Converted):
  flat_a, flat_b = mapping.flatten(a.params), mapping.flatten(b.params)
  assert sorted(flat_a) == sorted(flat_b)
  for path, value in flat_a.items():
    assert value.dtype == flat_b[path].dtype == np.float32, path
    np.testing.assert_array_equal(value, flat_b[path], err_msg=path)
  assert a.config == b.config and a.heads == b.heads


def _assert_loads_original(out_dir: str, original, auto_class: str):
  """transformers loads our export with every weight equal to the original model's."""
  model_class = getattr(transformers, auto_class)
  model, info = model_class.from_pretrained(out_dir, output_loading_info=True)
  assert info['missing_keys'] == [] and info['mismatched_keys'] == [], info
  source = original.state_dict()
  prefix = original.base_model_prefix
  for name, value in model.state_dict().items():
    key = name if name in source else f'{prefix}.{name}'
    assert torch.equal(value, source[key]), name


@pytest.mark.parametrize('case', list(CASES))
def test_parity_round_trip(case, tmp_path):
  builder, family, reload_classes, unconverted = CASES[case]
  original = _random_model(builder)
  src, out, back, again = (str(tmp_path / n) for n in ('hf', 'ours', 'back', 'again'))
  original.save_pretrained(src)
  if unconverted:
    with pytest.warns(UserWarning, match='not converted'):
      c = hf.import_hf(src, out, family)
    assert c.unconverted and all(u.startswith(unconverted) for u in c.unconverted)
  else:
    c = hf.import_hf(src, out, family)
    assert c.unconverted == []
  dropout = {
    'gpt2': 'resid_pdrop',
    'openai-gpt': 'resid_pdrop',
    'distilbert': 'dropout',
    't5': 'dropout_rate',
    'bart': 'dropout',
  }
  dropout = dropout.get(family, 'hidden_dropout_prob')
  assert c.config.dropout_rate == getattr(original.config, dropout)

  diffs = verify.compare(src, converted.load(out))
  print(f'parity {case}: ' + ', '.join(f'{k} {v:.2e}' for k, v in diffs.items()))
  expected = {'hidden'} | ({'pooled'} if c.config.pooler else set())
  expected |= {'logits'} if {'masked_lm', 'causal_lm', 'seq2seq_lm'} & set(c.heads) else set()
  assert set(diffs) == expected
  assert max(diffs.values()) < TOL, diffs

  hf.export_hf(converted.load(out), back, tokenizer_files_from=out)
  for auto_class in reload_classes:
    _assert_loads_original(back, original, auto_class)
  _assert_same_params(converted.load(out), hf.import_hf(back, again, family))


def test_pooler_and_heads_are_stored_as_a_union(tmp_path):
  original = _random_model(_bert)
  original.save_pretrained(tmp_path / 'hf')
  with pytest.warns(UserWarning):
    c = hf.import_hf(str(tmp_path / 'hf'), str(tmp_path / 'ours'))
  assert set(c.params) == {'encoder', 'pooler', 'mlm_transform', 'mlm_norm', 'mlm_bias'}
  assert c.heads == ['backbone', 'masked_lm'] and c.config.pooler
  assert set(converted.head_params(c, 'backbone')) == {'encoder', 'pooler'}
  assert set(converted.head_params(c, 'masked_lm')) == {
    'encoder',
    'mlm_transform',
    'mlm_norm',
    'mlm_bias',
  }


def test_bin_checkpoint_is_read_with_weights_only(tmp_path, monkeypatch):
  original = _random_model(_gpt2)
  original.save_pretrained(tmp_path / 'st')
  original.save_pretrained(tmp_path / 'bin', safe_serialization=False)
  assert os.listdir(tmp_path / 'bin').count('pytorch_model.bin') == 1
  calls = []
  real_load = torch.load

  def spy(*args, **kwargs):
    calls.append(kwargs)
    return real_load(*args, **kwargs)

  monkeypatch.setattr(torch, 'load', spy)
  from_bin = hf.import_hf(str(tmp_path / 'bin'), str(tmp_path / 'ours_bin'))
  assert calls and all(k.get('weights_only') is True for k in calls)
  _assert_same_params(from_bin, hf.import_hf(str(tmp_path / 'st'), str(tmp_path / 'ours_st')))


class _Payload:
  """Pickles as a call to os.system: what an unsafe loader would execute."""

  def __init__(self, marker: str):
    self.marker = marker

  def __reduce__(self):
    return (os.system, (f'touch {self.marker}',))


def test_bin_with_non_tensor_pickle_is_refused(tmp_path):
  marker = tmp_path / 'executed'
  torch.save(
    {'wte.weight': torch.zeros(3, 2), 'x': _Payload(str(marker))}, tmp_path / 'pytorch_model.bin'
  )
  with pytest.raises(ValueError, match='Refusing .*weights_only=True'):
    checkpoint_io.read_tensors(str(tmp_path))
  assert not marker.exists()
  torch.save({'step': 3}, tmp_path / 'pytorch_model.bin')  # Loads, but holds no tensor.
  with pytest.raises(ValueError, match="entry 'step' is a int"):
    checkpoint_io.read_tensors(str(tmp_path))
  with open(tmp_path / 'pytorch_model.bin', 'wb') as f:
    pickle.dump(_Payload(str(marker)), f, protocol=2)  # A plain pickle, not a torch archive.
  with pytest.raises(ValueError, match='Refusing'):
    checkpoint_io.read_tensors(str(tmp_path))
  assert not marker.exists()


def test_cli_end_to_end(tmp_path, capsys):
  _random_model(_bert).save_pretrained(tmp_path / 'hf')
  (tmp_path / 'hf' / 'vocab.txt').write_text('[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n')
  src, out, back = (str(tmp_path / n) for n in ('hf', 'ours', 'back'))
  with pytest.warns(UserWarning):
    assert cli.main(['--from', 'hf', '--family', 'bert', src, out, '--verify']) == 0
  printed = capsys.readouterr().out
  assert 'verify: OK' in printed and 'max |ours - transformers| of logits' in printed
  assert os.path.isfile(os.path.join(out, 'vocab.txt'))
  assert cli.main(['--to', 'hf', out, back]) == 0
  assert sorted(os.listdir(back)) == ['config.json', 'model.safetensors', 'vocab.txt']
  with pytest.warns(UserWarning):
    assert (
      cli.main(['--from', 'hf', src, str(tmp_path / 'o2'), '--verify', '--tolerance', '1e-12']) == 1
    )
  assert 'verify: FAILED' in capsys.readouterr().out
  assert cli.main(['--from', 'hf', '--family', 'gpt2', src, str(tmp_path / 'o3')]) == 2
  assert "--family gpt2 but config.json says model_type='bert'" in capsys.readouterr().err
