"""What makes a checkpoint trustworthy: a digest of every array of the train state, and
the errors that tell a damaged checkpoint (fall back to an older one) from a checkpoint
this run must not use (stop and say why).

Orbax writes and reads arrays without checksums: bytes flipped on disk restore
"successfully" as other numbers (NaN losses a few steps later, and then a NaN
checkpoint that rotates the good ones away). So every checkpoint carries, in a JSON item
of its own, a 64-bit digest of each state leaf, and a restored state is compared with it
before the run uses it.

The digest is computed leaf by leaf (`state_record`): each element's bits, read as
unsigned integers (float32 as uint32, bfloat16 as uint16 widened to uint32, ...), are
multiplied by an odd number derived from the element's global flat index by an integer
hash, and summed with uint32 wrap-around; two hashes give 64 bits. A sum does not depend
on how the array is split over devices or hosts, so a checkpoint written by 2 processes
on one mesh verifies after a resume by 1 process on another. A large leaf, or one spread
over other processes' devices, is hashed on its devices and nothing but two words comes
to the host; a small one held by this process alone (at most HOST_DIGEST_MAX elements of
1, 2 or 4 bytes: biases, norms, a small model's every leaf) is copied to the host and
hashed there by NumPy with the same arithmetic, bit for bit, instead of compiling one
more small program for its shape. Any single changed element changes the sum (an odd
multiplier is invertible modulo 2^32); moved or multiple changes escape it with
probability about 2^-64. The same pass reports which floating leaves hold a NaN or an
infinity: such a state is never saved, nor resumed from.
"""

import hashlib
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import NamedSharding, PartitionSpec

FORMAT = 'plm-flax-integrity/1'
# Salts of the two position hashes (any two distinct constants).
_SALTS = (0x00000000, 0x9E3779B9)


class CorruptCheckpointError(Exception):
  """A checkpoint step that cannot be trusted: missing or unreadable files, digests that
  do not match, a non-finite state. Resuming moves it aside and falls back."""

  def __init__(self, step: int, item: str, reason: str, where: str = ''):
    place = f'checkpoint {where}/{step}' if where else f'checkpoint step {step}'
    super().__init__(f'{place}, item {item!r}: {reason}')
    self.step, self.item, self.reason = step, item, reason


class CheckpointMismatchError(ValueError):
  """A sound checkpoint that this run's config cannot use (another tokenizer, model or
  schedule): the user's to fix, so the checkpoint is left where it is."""


class NonFiniteStateError(FloatingPointError):
  """The state to be saved holds NaN or infinite values; it is not saved."""


def leaf_name(path) -> str:
  """'params/encoder/block_0/mlp/wi/kernel', 'opt_state/1/0/mu/...' for a key path; the
  same for the TrainState and for the nested dicts Orbax restores it as."""
  parts = []
  for key in path:
    for attribute in ('key', 'name', 'idx'):
      if hasattr(key, attribute):
        parts.append(str(getattr(key, attribute)))
        break
    else:
      parts.append(str(key))
  return '/'.join(parts)


def _position_hash(index):
  """A well-mixed uint32 of a uint32 (Chris Wellons' lowbias32)."""
  index = index ^ (index >> 16)
  index = index * jnp.uint32(0x7FEB352D)
  index = index ^ (index >> 15)
  index = index * jnp.uint32(0x846CA68B)
  return index ^ (index >> 16)


def _words(x):
  """The bits of `x` as uint32, one word per element (two for 64-bit types)."""
  if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  if x.dtype == jnp.bool_:
    return x.astype(jnp.uint32)
  size = x.dtype.itemsize
  if size == 4:
    return lax.bitcast_convert_type(x, jnp.uint32)
  if size == 8:
    return lax.bitcast_convert_type(x, jnp.uint32)  # [..., 2]
  unsigned = {2: jnp.uint16, 1: jnp.uint8}[size]
  return lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32)


def _host_digest(x: np.ndarray) -> tuple[np.ndarray, bool]:
  """`_leaf_digest` of a host array of 1-, 2- or 4-byte elements, by NumPy."""
  if x.dtype == np.bool_:
    words = x.astype(np.uint32)
  else:
    unsigned = {4: np.uint32, 2: np.uint16, 1: np.uint8}[x.dtype.itemsize]
    words = x.view(unsigned).astype(np.uint32)
  index = np.arange(words.size, dtype=np.uint32).reshape(words.shape)  # The flat index.
  sums = []
  with np.errstate(over='ignore'):  # uint32 wrap-around is the arithmetic (0-d leaves warn).
    for salt in _SALTS:
      h = index ^ np.uint32(salt)
      h = (h ^ (h >> np.uint32(16))) * np.uint32(0x7FEB352D)  # _position_hash, in NumPy.
      h = (h ^ (h >> np.uint32(15))) * np.uint32(0x846CA68B)
      h = h ^ (h >> np.uint32(16))
      sums.append(np.sum(words * (h | np.uint32(1)), dtype=np.uint32))
  inexact = jnp.issubdtype(x.dtype, jnp.inexact)  # bfloat16 included.
  finite = bool(np.isfinite(x.astype(np.float32)).all()) if inexact else True
  return np.array(sums, np.uint32), finite


# The most elements a leaf hashed on the host may have (256 KiB of float32).
HOST_DIGEST_MAX = 1 << 16


def _hashed_on_host(x) -> bool:
  """Whether leaf `x` is small, of 1-, 2- or 4-byte elements and held by this process."""
  if x.size > HOST_DIGEST_MAX or jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
    return False
  if np.dtype(x.dtype).itemsize not in (1, 2, 4):
    return False
  return not isinstance(x, jax.Array) or x.is_fully_addressable


def _leaf_digest(x):
  """(uint32[2] digest, bool finite) of one array."""
  words = _words(x)
  index = jnp.zeros(words.shape, jnp.uint32)
  stride = 1
  for axis in reversed(range(words.ndim)):  # The global flat (row-major) index.
    index = index + lax.broadcasted_iota(jnp.uint32, words.shape, axis) * jnp.uint32(stride)
    stride = (stride * words.shape[axis]) % (1 << 32)
  sums = [
    jnp.sum(words * (_position_hash(index ^ jnp.uint32(salt)) | jnp.uint32(1)), dtype=jnp.uint32)
    for salt in _SALTS
  ]
  finite = jnp.all(jnp.isfinite(x)) if jnp.issubdtype(x.dtype, jnp.inexact) else jnp.bool_(True)
  return jnp.stack(sums), finite


# One program per distinct leaf (shape, dtype, sharding), not one for the whole state:
# the leaves of a model repeat a few shapes (its layers; params and both Adam moments),
# so a state of hundreds of leaves compiles a handful of small programs, once per
# process (and reads them from the persistent compilation cache after that), where one
# program over every leaf took seconds to compile for each new model.
_LEAF_DIGEST = jax.jit(_leaf_digest)
_LEAF_DIGEST_ON_MESH = {}


def _digest_fn(x):
  """The jitted digest of leaf `x`, its outputs replicated over its mesh (every process
  reads the same words), or placed by jit for host arrays."""
  if not isinstance(x.sharding, NamedSharding):
    return _LEAF_DIGEST
  mesh = x.sharding.mesh
  if mesh not in _LEAF_DIGEST_ON_MESH:
    _LEAF_DIGEST_ON_MESH[mesh] = jax.jit(
      _leaf_digest, out_shardings=NamedSharding(mesh, PartitionSpec())
    )
  return _LEAF_DIGEST_ON_MESH[mesh]


def _as_leaf(x):
  """A jax.Array as it is; a host array as it is where it is hashed on the host, else put
  on the default device (64-bit values narrowed as JAX narrows them)."""
  if isinstance(x, jax.Array):
    return x
  x = np.asarray(x)
  return x if _hashed_on_host(x) else jnp.asarray(x)


def state_record(state) -> tuple[dict, list[str]]:
  """The digest record of a state, and the names of its non-finite floating leaves.

  Args:
    state: a pytree of jax.Arrays (sharded or not) or NumPy arrays.

  Returns:
    ({leaf name: {'shape', 'dtype', 'digest' (16 hex digits)}}, [non-finite leaf names]).
  """
  named = jax.tree_util.tree_flatten_with_path(state)[0]
  if not named:
    return {}, []
  leaves = [_as_leaf(x) for _, x in named]

  def digest(x):
    if _hashed_on_host(x):
      return _host_digest(np.asarray(x))
    # One leaf at a time, each waited for: with many small programs in flight at once,
    # each with its all-reduce, XLA's CPU client ran out of threads for the collectives'
    # rendezvous on 8 devices (an abort after 40 s; 4-process FSDP test).
    return jax.device_get(_digest_fn(x)(x))

  digests, finite = zip(*(digest(x) for x in leaves), strict=True)
  record, nonfinite = {}, []
  for (path, _), x, digest, ok in zip(named, leaves, digests, finite, strict=True):
    name = leaf_name(path)
    record[name] = {
      'shape': list(x.shape),
      'dtype': np.dtype(x.dtype).name,
      'digest': f'{int(digest[0]):08x}{int(digest[1]):08x}',
    }
    if not ok:
      nonfinite.append(name)
  return record, nonfinite


def json_digest(value) -> str:
  """sha256 of a JSON item as it reads back (keys as strings, sorted)."""
  canonical = json.loads(json.dumps(value))
  return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()


def structure_differences(saved: dict, target) -> list[str]:
  """How the leaves a checkpoint holds (its record) differ from a restore target's
  (ShapeDtypeStructs): missing, extra, or of another shape or dtype."""
  wanted = {
    leaf_name(path): (list(leaf.shape), np.dtype(leaf.dtype).name)
    for path, leaf in jax.tree_util.tree_flatten_with_path(target)[0]
  }
  differences = [f'{name} (not in this model)' for name in sorted(set(saved) - set(wanted))]
  differences += [f'{name} (not in the checkpoint)' for name in sorted(set(wanted) - set(saved))]
  for name in sorted(set(saved) & set(wanted)):
    have = (saved[name]['shape'], saved[name]['dtype'])
    if have != wanted[name]:
      differences.append(
        f'{name} ({have[1]}{have[0]} in the checkpoint, {wanted[name][1]}{wanted[name][0]} here)'
      )
  return differences


def digest_differences(saved: dict, restored: dict) -> list[str]:
  """Leaves whose restored digest (or shape, dtype, presence) differs from the saved one."""
  names = sorted(set(saved) | set(restored))
  return [n for n in names if n not in saved or n not in restored or saved[n] != restored[n]]


def first(names: list[str], count: int = 3) -> str:
  """'a, b, c and 5 more': a few names for a one-line message."""
  more = f' and {len(names) - count} more' if len(names) > count else ''
  return ', '.join(names[:count]) + more


def short(error: BaseException) -> str:
  """The first line of an error, at most 300 characters: Orbax and TensorStore errors
  run to pages, a log line and a message need what failed."""
  lines = str(error).strip().splitlines() or [type(error).__name__]
  text = lines[0]
  return text if len(text) <= 300 else text[:297] + '...'


def check_step_files(directory: str, step: int, items: tuple[str, ...]) -> bool:
  """Raises CorruptCheckpointError for a step directory without the files every
  checkpoint has (an empty stray directory, a deleted item or Orbax metadata file);
  returns whether the step has an integrity item (steps saved before digests have not,
  and their _CHECKPOINT_METADATA does not list one)."""
  path = os.path.join(directory, str(step))

  def corrupt(item, reason):
    return CorruptCheckpointError(step, item, reason, where=directory)

  if not os.path.isdir(path):
    raise corrupt('step', f'{path} is not a directory')
  listed = None
  try:
    with open(os.path.join(path, '_CHECKPOINT_METADATA')) as f:
      listed = sorted(json.load(f)['item_handlers'])
  except FileNotFoundError:
    pass
  except (OSError, ValueError, KeyError, TypeError) as error:
    raise corrupt('_CHECKPOINT_METADATA', f'unreadable ({short(error)})') from error
  present = sorted(name for name in items if os.path.isdir(os.path.join(path, name)))
  if listed is None and not present:
    raise corrupt('step', 'an empty or stray directory (no _CHECKPOINT_METADATA, no items)')
  expected = listed if listed is not None else ['data', 'meta', 'state']
  missing = [name for name in expected if name not in present]
  if not os.path.exists(os.path.join(path, 'state', '_METADATA')):
    missing.append('state/_METADATA')
  if listed is None:
    missing.insert(0, '_CHECKPOINT_METADATA')
  if missing:
    raise corrupt(missing[0], f'missing {", ".join(missing)}')
  return 'integrity' in expected
