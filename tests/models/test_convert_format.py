"""Tests of models/convert that need neither torch nor transformers.

Round trips ours -> Hugging Face layout -> ours for every family (random
params of the shapes our modules create), the safetensors reader and writer,
config and tensor errors that name the bad value, our output directory, and
the refusal of `.bin` files when torch is absent.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from models import heads
from models.convert import (
  checkpoint_io,
  converted,
  get_family,
  hf,
  mapping,
  safetensors_format,
  scan,
)
from models.convert.converted import Converted

SMALL = dict(
  vocab_size=50,
  hidden_size=16,
  num_hidden_layers=2,
  num_attention_heads=2,
  intermediate_size=24,
  max_position_embeddings=32,
)
# case -> (family, config.json, whether the checkpoint has a pooler).
CASES = {
  'bert': ('bert', SMALL, True),
  'roberta-untied': ('roberta', dict(SMALL, tie_word_embeddings=False, type_vocab_size=1), True),
  'albert': ('albert', dict(SMALL, embedding_size=8), True),
  'electra': ('electra', dict(SMALL, embedding_size=8), False),
  'distilbert': (
    'distilbert',
    dict(vocab_size=50, dim=16, n_layers=2, n_heads=2, hidden_dim=24, max_position_embeddings=32),
    False,
  ),
  'gpt2-untied': (
    'gpt2',
    dict(vocab_size=50, n_embd=16, n_layer=2, n_head=2, n_positions=32, tie_word_embeddings=False),
    False,
  ),
}


def _random_converted(case: str, seed: int = 0) -> Converted:
  """A Converted checkpoint of random params in exactly the shapes our modules create."""
  family_name, hf_config, pooler = CASES[case]
  family = get_family(family_name)
  cfg = family.config_from_hf(dict(hf_config, model_type=family_name)).replace(pooler=pooler)
  shapes = {}
  for head in family.heads.values():
    shapes.update(mapping.reference_shapes(head.model(cfg)))
  rng = np.random.default_rng(seed)
  params = {p: rng.standard_normal(s).astype(np.float32) for p, s in shapes.items()}
  return Converted(family_name, cfg, mapping.unflatten(params), list(family.heads))


@pytest.mark.parametrize('case', list(CASES))
def test_ours_to_hf_to_ours_is_exact(case, tmp_path):
  ours = _random_converted(case)
  config, tensors = hf.to_hf(ours)
  checkpoint_io.write_hf_dir(str(tmp_path / 'hf'), config, tensors)
  back = hf.import_hf(str(tmp_path / 'hf'), str(tmp_path / 'ours'))
  assert back.unconverted == [] and back.config == ours.config
  flat, flat_back = mapping.flatten(ours.params), mapping.flatten(back.params)
  assert sorted(flat) == sorted(flat_back)
  for path, value in flat.items():
    np.testing.assert_array_equal(value, flat_back[path], err_msg=path)


def test_scanned_params_export_like_looped_ones():
  ours = _random_converted('bert')
  scanned = Converted(
    'bert', ours.config.replace(scan_layers=True), scan.to_scanned(ours.params), ours.heads
  )
  assert 'blocks' in scanned.params['encoder']
  config, tensors = hf.to_hf(ours)
  scanned_config, scanned_tensors = hf.to_hf(scanned)
  assert scanned_config == config and sorted(scanned_tensors) == sorted(tensors)
  for name, value in tensors.items():
    np.testing.assert_array_equal(scanned_tensors[name], value, err_msg=name)


def test_safetensors_round_trip_and_layout(tmp_path):
  import ml_dtypes

  tensors = {
    'b': np.arange(6, dtype=np.float32).reshape(2, 3),
    'a': np.array([1.5, -2.0], ml_dtypes.bfloat16),
    'c': np.arange(3, dtype=np.int64),
  }
  path = str(tmp_path / 'x.safetensors')
  safetensors_format.write(path, tensors, metadata={'format': 'pt'})
  with open(path, 'rb') as f:
    size = int.from_bytes(f.read(8), 'little')
    header = json.loads(f.read(size))
  assert size % 8 == 0 and header['__metadata__'] == {'format': 'pt'}
  assert header['a'] == {'dtype': 'BF16', 'shape': [2], 'data_offsets': [0, 4]}
  assert header['b']['data_offsets'] == [4, 28]
  back = safetensors_format.read(path)
  for name, value in tensors.items():
    assert back[name].dtype == value.dtype
    np.testing.assert_array_equal(back[name], value)
  (tmp_path / 'bad.safetensors').write_bytes(b'\xff' * 16)
  with pytest.raises(ValueError, match='not a safetensors file'):
    safetensors_format.read(str(tmp_path / 'bad.safetensors'))


def test_safetensors_matches_the_reference_library(tmp_path):
  st = pytest.importorskip('safetensors.numpy', reason='cross-check needs the safetensors package')
  tensors = {'w': np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32)}
  safetensors_format.write(str(tmp_path / 'ours.safetensors'), tensors)
  np.testing.assert_array_equal(st.load_file(str(tmp_path / 'ours.safetensors'))['w'], tensors['w'])
  st.save_file(tensors, str(tmp_path / 'ref.safetensors'))
  np.testing.assert_array_equal(
    safetensors_format.read(str(tmp_path / 'ref.safetensors'))['w'], tensors['w']
  )


@pytest.mark.parametrize(
  'family,change,message',
  [
    ('bert', {'hidden_act': 'gelu_fast'}, "hidden_act='gelu_fast' is not supported"),
    ('bert', {'position_embedding_type': 'relative_key'}, "position_embedding_type='relative_key'"),
    ('bert', {'is_decoder': True}, 'is_decoder=True'),
    ('bert', {'num_attention_heads': 3}, 'not divisible by 3 heads'),
    ('albert', {'num_hidden_groups': 2}, 'num_hidden_groups=2'),
    ('distilbert', {'activation': 'silu'}, "activation='silu'"),
    ('gpt2', {'scale_attn_by_inverse_layer_idx': True}, 'scale_attn_by_inverse_layer_idx=True'),
  ],
)
def test_unsupported_config_values_are_errors_naming_them(family, change, message):
  with pytest.raises(ValueError, match=message.replace('(', r'\(')):
    get_family(family).config_from_hf({**SMALL, **change})


def test_hidden_act_names_map_to_ours():
  bert = get_family('bert')
  for hf_name, ours in [
    ('gelu', 'gelu'),
    ('gelu_new', 'gelu_tanh'),
    ('gelu_pytorch_tanh', 'gelu_tanh'),
    ('relu', 'relu'),
  ]:
    assert bert.config_from_hf({**SMALL, 'hidden_act': hf_name}).activation == ours
  cfg = get_family('roberta').config_from_hf(
    {**SMALL, 'hidden_dropout_prob': 0.2, 'pad_token_id': 1}
  )
  assert (cfg.position_offset, cfg.dropout_rate, cfg.attention_dropout_rate) == (2, 0.2, 0.1)


def _bert_tensors(seed: int = 0) -> dict:
  ours = _random_converted('bert', seed)
  return hf.to_hf(ours)[1]


def test_tensors_without_counterpart_are_listed_not_dropped():
  tensors = _bert_tensors()
  tensors['cls.seq_relationship.weight'] = np.zeros((2, 16), np.float32)
  tensors['cls.predictions.decoder.weight'] = tensors['bert.embeddings.word_embeddings.weight'] + 1
  tensors['bert.embeddings.position_ids'] = np.arange(32)[None]
  c = hf.from_tensors('bert', dict(SMALL, model_type='bert'), tensors)
  assert c.unconverted == [
    'cls.predictions.decoder.weight [50, 16]: tied to bert.embeddings.word_embeddings.weight '
    'by the config but holds different values (the model ignores it)',
    'cls.seq_relationship.weight [2, 16]: no counterpart in our models',
  ]
  assert c.ignored == ['bert.embeddings.position_ids']
  with pytest.warns(UserWarning, match='2 source tensors were not converted'):
    hf.warn_unconverted(c)


def test_missing_or_misshapen_tensors_are_errors():
  tensors = _bert_tensors()
  del tensors['bert.encoder.layer.1.output.dense.bias']
  with pytest.raises(ValueError, match='lacks these params:\n  encoder/block_1/mlp/wo/bias'):
    hf.from_tensors('bert', SMALL, tensors)
  tensors = _bert_tensors()
  tensors['bert.pooler.dense.weight'] = np.zeros((16, 8), np.float32)
  with pytest.raises(
    ValueError, match=r'pooler/dense/kernel: checkpoint \[8, 16\], ours \[16, 16\]'
  ):
    hf.from_tensors('bert', SMALL, tensors)
  tensors = _bert_tensors()
  del tensors['cls.predictions.transform.dense.weight']
  with pytest.raises(ValueError, match='lacks these params:\n  mlm_transform/kernel'):
    hf.from_tensors('bert', SMALL, tensors)


def test_base_model_checkpoints_get_the_prefix():
  tensors = {k[len('bert.') :]: v for k, v in _bert_tensors().items() if k.startswith('bert.')}
  c = hf.from_tensors('bert', SMALL, tensors)
  assert set(c.params) == {'encoder', 'pooler'} and c.heads == ['backbone'] and c.config.pooler


def test_export_refuses_configs_the_format_cannot_express():
  ours = _random_converted('bert')
  ours.config = ours.config.replace(pre_norm=True)
  with pytest.raises(ValueError, match='pre_norm=True .a bert checkpoint would give False'):
    hf.to_hf(ours)


def test_family_must_match_model_type():
  with pytest.raises(ValueError, match="--family gpt2 but config.json says model_type='bert'"):
    hf.resolve_family('gpt2', {'model_type': 'bert'})
  with pytest.raises(ValueError, match="Family 'xlnet'"):
    hf.resolve_family(None, {'model_type': 'xlnet'})


def test_converted_directory_round_trip(tmp_path):
  ours = _random_converted('albert')
  ours.unconverted = ['sop_classifier.classifier.weight [2, 16]: no counterpart in our models']
  out = str(tmp_path / 'ours')
  converted.save(out, ours)
  with open(os.path.join(out, 'model.json')) as f:
    meta = json.load(f)
  assert meta['family'] == 'albert' and meta['config']['share_layers'] is True
  assert meta['unconverted'] == ours.unconverted
  back = converted.load(out)
  assert back.config == ours.config and back.heads == ours.heads
  np.testing.assert_array_equal(back.params['mlm_bias'], ours.params['mlm_bias'])
  with pytest.raises(FileExistsError, match='already holds a converted checkpoint'):
    converted.save(out, ours)
  gpt = _random_converted('gpt2-untied')
  assert set(converted.head_params(gpt, 'backbone')) == {'encoder'}
  assert set(converted.head_params(gpt, 'causal_lm')) == {'decoder', 'lm_head'}
  with pytest.raises(ValueError, match='no MLM head'):
    converted.head_params(gpt, 'masked_lm')
  heads.Backbone(back.config)  # The stored config builds our model.


def test_bin_is_refused_without_torch(tmp_path, monkeypatch):
  (tmp_path / 'pytorch_model.bin').write_bytes(b'not read')
  monkeypatch.setitem(sys.modules, 'torch', None)  # `import torch` now fails.
  with pytest.raises(
    ImportError, match='PyTorch pickle; reading it needs torch.*weights_only=True'
  ):
    checkpoint_io.read_tensors(str(tmp_path))


def test_import_models_convert_stays_light():
  code = (
    'import sys, models.convert, models.convert.hf, models.convert.verify, models.convert.tf_bert; '
    "print([m for m in ('torch', 'tensorflow', 'transformers') if m in sys.modules])"
  )
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  result = subprocess.run([sys.executable, '-c', code], cwd=root, capture_output=True, text=True)
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == '[]'
