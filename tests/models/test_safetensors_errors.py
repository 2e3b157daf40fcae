"""Corrupt safetensors files: each way a file can be broken is a ValueError naming the
file and what is wrong, with the parsing error chained as its cause."""

import json
import struct

import numpy as np
import pytest

from models.convert import safetensors_format


@pytest.fixture
def good_file(tmp_path) -> tuple[str, bytes]:
  path = str(tmp_path / 'model.safetensors')
  tensors = {'a': np.arange(6, dtype=np.float32).reshape(2, 3), 'b': np.ones(4, np.int64)}
  safetensors_format.write(path, tensors)
  with open(path, 'rb') as f:
    return path, f.read()


def _header_size(data: bytes) -> int:
  return struct.unpack('<Q', data[:8])[0]


def _with_header(header: dict | bytes, body: bytes = b'') -> bytes:
  encoded = header if isinstance(header, bytes) else json.dumps(header).encode()
  return struct.pack('<Q', len(encoded)) + encoded + body


def _read_error(tmp_path, data: bytes) -> ValueError:
  path = tmp_path / 'broken.safetensors'
  path.write_bytes(data)
  with pytest.raises(ValueError) as raised:
    safetensors_format.read(str(path))
  assert str(raised.value).startswith(str(path))
  return raised.value


def test_the_good_file_reads(good_file):
  tensors = safetensors_format.read(good_file[0])
  np.testing.assert_array_equal(tensors['a'], np.arange(6).reshape(2, 3))


def test_a_file_shorter_than_the_length_prefix(tmp_path, good_file):
  error = _read_error(tmp_path, good_file[1][:5])
  assert 'not a safetensors file: 5 bytes, shorter than the 8-byte header length' in str(error)


def test_a_header_length_beyond_the_file(tmp_path, good_file):
  data = good_file[1]
  cut = data[: 8 + _header_size(data) // 2]  # Truncated inside the header.
  error = _read_error(tmp_path, cut)
  assert (
    f'header length {_header_size(data)} runs past the end of the file ({len(cut)} bytes'
    in str(error)
  )


def test_a_header_that_is_not_json(tmp_path):
  error = _read_error(tmp_path, _with_header(b'{"a": {"dtype": "F32", "sha'))
  assert 'the safetensors header is not valid JSON' in str(error)
  assert isinstance(error.__cause__, json.JSONDecodeError)
  error = _read_error(tmp_path, _with_header(b'{"a\xff": 1}'))
  assert isinstance(error.__cause__, UnicodeDecodeError)
  error = _read_error(tmp_path, _with_header([1, 2]))
  assert 'the safetensors header is a JSON list, not an object' in str(error)


def test_data_offsets_beyond_the_file(tmp_path, good_file):
  data = good_file[1]
  error = _read_error(tmp_path, data[:-8])  # The last tensor's last 8 bytes are gone.
  assert 'tensor b has data offsets [24, 56] beyond the end of the file' in str(error)
  assert 'its data section holds 48 bytes' in str(error)


@pytest.mark.parametrize(
  'entry,complaint',
  [
    ({'dtype': 'F32', 'shape': [2]}, "header entry 'w' is"),
    ({'dtype': 'F32', 'shape': [-2], 'data_offsets': [0, 8]}, 'has shape [-2]'),
    ({'dtype': 'F32', 'shape': [2], 'data_offsets': [8, 0]}, 'has data_offsets [8, 0]'),
    ({'dtype': 'F32', 'shape': [2], 'data_offsets': [0]}, 'has data_offsets [0]'),
    ({'dtype': 'F32', 'shape': [3], 'data_offsets': [0, 8]}, 'has inconsistent offsets'),
    ({'dtype': 'X9', 'shape': [2], 'data_offsets': [0, 8]}, 'has dtype X9'),
  ],
)
def test_malformed_entries(tmp_path, entry, complaint):
  error = _read_error(tmp_path, _with_header({'w': entry}, bytes(16)))
  assert complaint in str(error)
