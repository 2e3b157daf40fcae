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
    ValueError: The file is not a well-formed safetensors file.
  """
  with open(path, 'rb') as f:
    size = int.from_bytes(f.read(8), 'little')
    if not 0 < size <= _MAX_HEADER:
      raise ValueError(f'{path} is not a safetensors file (header size {size}).')
    header = json.loads(f.read(size))
    data = f.read()
  header.pop('__metadata__', None)
  tensors = {}
  for name, info in header.items():
    if info['dtype'] not in _DTYPES:
      raise ValueError(f'{path}: tensor {name} has dtype {info["dtype"]}; known: {list(_DTYPES)}.')
    dtype = np.dtype(_DTYPES[info['dtype']]).newbyteorder('<')
    begin, end = info['data_offsets']
    count = math.prod(info['shape'])
    if end - begin != count * dtype.itemsize or end > len(data):
      raise ValueError(f'{path}: tensor {name} has inconsistent offsets {info["data_offsets"]}.')
    tensors[name] = np.frombuffer(data, dtype, count, begin).reshape(info['shape'])
  return tensors


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
