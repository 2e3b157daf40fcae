"""A converted checkpoint (python -m models.convert) carries a digest of every tensor, and
damaged bytes are an error naming the file and the tensor wherever it is loaded: by
models.convert itself, and by `init_from` (training/pretrained.py)."""

import glob
import json
import os
import shutil

import numpy as np
import orbax.checkpoint as ocp
import pytest

from models.convert import __main__ as convert_main
from models.convert import converted, get_family, mapping
from training import model_setup, pretrained

# A failed Orbax read leaves coroutines collected after its event loop closed: Orbax's.
pytestmark = pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')

SMALL = dict(
  model_type='bert',
  vocab_size=50,
  hidden_size=16,
  num_hidden_layers=1,
  num_attention_heads=2,
  intermediate_size=24,
  max_position_embeddings=32,
)
KERNEL = 'encoder/block_0/mlp/wi/kernel'


@pytest.fixture
def saved(tmp_path) -> tuple[str, converted.Converted]:
  family = get_family('bert')
  config = family.config_from_hf(SMALL)
  shapes = {}
  for head in family.heads.values():
    shapes.update(mapping.reference_shapes(head.model(config)))
  rng = np.random.default_rng(0)
  params = {p: rng.standard_normal(s).astype(np.float32) for p, s in shapes.items()}
  ours = converted.Converted('bert', config, mapping.unflatten(params), list(family.heads))
  out = str(tmp_path / 'converted')
  converted.save(out, ours)
  return out, ours


def _model_json(out: str) -> dict:
  with open(os.path.join(out, converted.MODEL_JSON)) as f:
    return json.load(f)


def _rewrite_params(out: str, change):
  """The params on disk with `change` applied to the nested dict; model.json untouched."""
  path = os.path.join(out, converted.PARAMS)
  with ocp.StandardCheckpointer() as reader:
    params = converted._to_numpy(reader.restore(path))
  change(params)
  shutil.rmtree(path)
  with ocp.StandardCheckpointer() as writer:
    writer.save(path, params)


def test_every_tensor_has_a_digest_and_a_sound_checkpoint_loads(saved):
  out, ours = saved
  digests = _model_json(out)['digests']
  assert sorted(digests) == sorted(mapping.flatten(ours.params))
  assert digests[KERNEL]['shape'] == [16, 24] and len(digests[KERNEL]['sha256']) == 64
  back = converted.load(out)
  np.testing.assert_array_equal(back.params['encoder']['block_0']['mlp']['wi']['kernel'],
                                ours.params['encoder']['block_0']['mlp']['wi']['kernel'])  # fmt: skip


def _flip_one_byte(params):
  kernel = params['encoder']['block_0']['mlp']['wi']['kernel']
  raw = kernel.view(np.uint8).reshape(-1)
  raw[37] ^= 0x01


def test_a_changed_tensor_is_named_by_load_init_from_and_the_command_line(saved, tmp_path, capsys):
  out, _ = saved
  _rewrite_params(out, _flip_one_byte)
  expected = rf'{out}/params: tensor {KERNEL} differs from the digests written by the converter'
  with pytest.raises(ValueError, match=expected):
    converted.load(out)
  with pytest.raises(ValueError, match=expected):  # config.init_from=<this directory>
    pretrained.load_params(model_setup.describe(out))
  assert convert_main.main(['--to', 'hf', out, str(tmp_path / 'hf')]) == 2
  assert f'tensor {KERNEL} differs' in capsys.readouterr().err
  assert not os.path.exists(tmp_path / 'hf' / 'model.safetensors')


def test_flipped_bytes_on_disk_are_an_error(saved):
  """4 bytes flipped at 8 places spread over every array data file: which file holds which
  tensor, where in it, and which bytes are superseded OCDBT nodes varies from save to save
  (one byte in the middle of each file once missed every live tensor: a flaky pass), so
  every part of every file is hit; the load fails on the digests, or on the bytes Orbax
  can no longer read."""
  out, _ = saved
  files = glob.glob(f'{out}/params/ocdbt.process_*/d/*')
  assert files
  for path in files:
    size = os.path.getsize(path)
    with open(path, 'r+b') as f:
      for k in range(8):
        f.seek(size * (2 * k + 1) // 16)
        data = f.read(4)
        f.seek(-len(data), os.SEEK_CUR)
        f.write(bytes(b ^ 0xFF for b in data))
  damaged = rf'{out}/params: (tensors? .* differs? from the digests|unreadable)'
  with pytest.raises(ValueError, match=damaged):
    converted.load(out)


def test_a_missing_tensor_and_a_truncated_file_are_errors(saved):
  out, _ = saved
  _rewrite_params(out, lambda params: params.pop('mlm_norm'))
  with pytest.raises(
    ValueError, match=r'tensors mlm_norm/bias, mlm_norm/scale differ from the digests'
  ):
    converted.load(out)
  files = [p for p in glob.glob(f'{out}/params/**', recursive=True) if os.path.isfile(p)]
  open(max(files, key=os.path.getsize), 'w').close()
  with pytest.raises(ValueError, match=rf'{out}/params: unreadable .*convert it again'):
    converted.load(out)


def test_a_directory_written_before_digests_still_loads(saved):
  out, ours = saved
  meta = _model_json(out)
  del meta['digests']
  with open(os.path.join(out, converted.MODEL_JSON), 'w') as f:
    json.dump(meta, f)
  assert converted.load(out).config == ours.config
