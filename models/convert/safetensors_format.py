"""The safetensors file format, read and written with NumPy alone.

A file is an 8-byte little-endian header length N, N bytes of JSON
({name: {'dtype', 'shape', 'data_offsets': [begin, end]}, and an optional
'__metadata__': {str: str}}), then the tensors' raw little-endian bytes, the
offsets counted from the end of the header. NumPy has no bfloat16, so BF16
tensors come back as `ml_dtypes.bfloat16` arrays (JAX reads them as such);
neither torch nor the safetensors package is needed. Nothing is executed
while reading: the format holds only a JSON header and raw numbers.
"""

import json
import math
import os

import ml_dtypes
import numpy as np

_DTYPES = {
  'F64': np.float64,
  'F32': np.float32,
  'F16': np.float16,
  'BF16': ml_dtypes.bfloat16,
  'I64': np.int64,
  'I32': np.int32,
  'I16': np.int16,
  'I8': np.int8,
  'U8': np.uint8,
  'BOOL': np.bool_,
}
_NAMES = {np.dtype(t): name for name, t in _DTYPES.items()}
_MAX_HEADER = 100 << 20  # The format's own limit on the header size.


def read(path: str) -> dict[str, np.ndarray]:
  """Returns name -> array of a .safetensors file (read-only arrays over one buffer).

  Raises:
    ValueError: The file is not a well-formed safetensors file: too short for its
      header, a header length beyond the file, a header that is not a JSON object of
      tensor entries, or a tensor whose bytes lie outside the file. The message names
      the file and what is wrong; a parsing error is chained as the cause.
  """
  with open(path, 'rb') as f:
    file_size = os.fstat(f.fileno()).st_size
    prefix = f.read(8)
    if len(prefix) < 8:
      raise ValueError(
        f'{path} is not a safetensors file: {file_size} bytes, shorter than the 8-byte '
        'header length that starts one (truncated?).'
      )
    size = int.from_bytes(prefix, 'little')
    if not 0 < size <= _MAX_HEADER:
      raise ValueError(f'{path} is not a safetensors file (header size {size}).')
    if size > file_size - 8:
      raise ValueError(
        f'{path}: the safetensors header length {size} runs past the end of the file '
        f'({file_size} bytes; truncated?).'
      )
    header_bytes = f.read(size)
    data = f.read()
  header = _parse_header(path, header_bytes)
  header.pop('__metadata__', None)
  tensors = {}
  for name, info in header.items():
    dtype, shape, (begin, end) = _tensor_entry(path, name, info)
    count = math.prod(shape)
    if end > len(data):
      raise ValueError(
        f'{path}: tensor {name} has data offsets [{begin}, {end}] beyond the end of the '
        f'file (its data section holds {len(data)} bytes; truncated?).'
      )
    if end - begin != count * dtype.itemsize:
      raise ValueError(f'{path}: tensor {name} has inconsistent offsets {info["data_offsets"]}.')
    tensors[name] = np.frombuffer(data, dtype, count, begin).reshape(shape)
  return tensors


def _parse_header(path: str, header_bytes: bytes) -> dict:
  try:
    header = json.loads(header_bytes.decode('utf-8'))
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise ValueError(f'{path}: the safetensors header is not valid JSON ({e}).') from e
  if not isinstance(header, dict):
    raise ValueError(
      f'{path}: the safetensors header is a JSON {type(header).__name__}, not an object of '
      'tensor entries.'
    )
  return header


def _is_count(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _tensor_entry(path: str, name: str, info) -> tuple[np.dtype, list[int], tuple[int, int]]:
  """(little-endian dtype, shape, (begin, end)) of one header entry, checked."""
  if not isinstance(info, dict) or not {'dtype', 'shape', 'data_offsets'} <= info.keys():
    raise ValueError(
      f'{path}: header entry {name!r} is {str(info)[:80]}; a tensor entry holds dtype, '
      'shape and data_offsets.'
    )
  if info['dtype'] not in _DTYPES:
    raise ValueError(f'{path}: tensor {name} has dtype {info["dtype"]}; known: {list(_DTYPES)}.')
  shape, offsets = info['shape'], info['data_offsets']
  if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
    raise ValueError(f'{path}: tensor {name} has shape {shape}; expected a list of sizes >= 0.')
  valid = isinstance(offsets, list) and len(offsets) == 2 and all(map(_is_count, offsets))
  if not valid or offsets[0] > offsets[1]:
    raise ValueError(
      f'{path}: tensor {name} has data_offsets {offsets}; expected [begin, end] with '
      '0 <= begin <= end.'
    )
  return np.dtype(_DTYPES[info['dtype']]).newbyteorder('<'), shape, tuple(offsets)


def write(path: str, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None):
  """Writes `tensors` (sorted by name) to `path` atomically (a temporary file, then rename)."""
  header, blobs, offset = {}, [], 0
  for name in sorted(tensors):
    array = np.ascontiguousarray(tensors[name])
    if array.dtype not in _NAMES:
      raise ValueError(f'Tensor {name} has dtype {array.dtype}; safetensors takes {list(_DTYPES)}.')
    blob = array.astype(array.dtype.newbyteorder('<'), copy=False).tobytes()
    header[name] = {
      'dtype': _NAMES[array.dtype],
      'shape': list(array.shape),
      'data_offsets': [offset, offset + len(blob)],
    }
    blobs.append(blob)
    offset += len(blob)
  if metadata:
    header['__metadata__'] = metadata
  encoded = json.dumps(header, separators=(',', ':')).encode()
  encoded += b' ' * (-len(encoded) % 8)  # The data starts 8-byte aligned.
  tmp = f'{path}.tmp{os.getpid()}'
  with open(tmp, 'wb') as f:
    f.write(len(encoded).to_bytes(8, 'little'))
    f.write(encoded)
    for blob in blobs:
      f.write(blob)
  os.replace(tmp, path)
