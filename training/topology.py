"""TPU slices by name, and the devices an ahead-of-time plan compiles for (training/plan.py).

A slice is named as Cloud TPU names it: `v5p-1024` (v4 and v5p count TensorCores, two
per chip, so 512 chips), `v5e-256` (v5e and v6e count chips), or by its grid of chips,
`v5p:8x8x8`. Its devices are either compile-only TPU devices that libtpu describes on
any host, CPU included (`jax.experimental.topologies`; `pip install -r
requirements-plan.txt`), or, without libtpu, as many CPU devices: the same mesh and
the same partitioned program, compiled by XLA's CPU backend instead of the TPU's, so
its memory figures are an estimate, not the TPU compiler's.

The HBM per chip is what the TPU compiler plans against, the "available HBM" libtpu
0.0.42.1 names when a program outgrows it (the Cloud TPU pages' 32 GiB v4, 16 GiB v5e,
95 GB v5p and 32 GB v6e, less what the runtime keeps); peak bf16 FLOP/s per chip are the
Cloud TPU system architecture pages' (docs.cloud.google.com/tpu/docs/v4, v5e, v5p, v6e).
"""

import dataclasses
import math
import os
import re

import jax
from jax.experimental import topologies

GiB = 2**30


@dataclasses.dataclass(frozen=True)
class Chip:
  """One TPU generation."""

  name: str  # As in the slice name: 'v5p'.
  libtpu_name: str  # As libtpu names its topologies: 'v5' for v5p.
  cores_per_chip: int  # TensorCores a slice name counts per chip (v4, v5p: 2; megacore).
  grid_dims: int  # 3: a 3D torus of chips (v4, v5p); 2: a 2D grid (v5e, v6e).
  hbm_bytes: int  # Per chip.
  peak_flops: float  # bf16 FLOP/s per chip.

  @property
  def megacore(self) -> bool:
    """Both TensorCores of a chip act as one JAX device."""
    return self.cores_per_chip == 2


CHIPS = {
  'v4': Chip('v4', 'v4', 2, 3, int(30.75 * GiB), 275e12),
  'v5e': Chip('v5e', 'v5e', 1, 2, int(15.75 * GiB), 197e12),
  'v5p': Chip('v5p', 'v5', 2, 3, int(95.74 * GiB), 459e12),
  'v6e': Chip('v6e', 'v6e', 1, 2, int(31.25 * GiB), 918e12),
}


@dataclasses.dataclass(frozen=True)
class Slice:
  """A TPU slice: its chip and its grid of chips."""

  name: str  # As given: 'v5p-1024' or 'v5p:8x8x8'.
  chip: Chip
  grid: tuple[int, ...]  # Chips along each axis of the torus / grid.

  @property
  def num_chips(self) -> int:
    return math.prod(self.grid)

  @property
  def libtpu_topology(self) -> str:
    return f'{self.chip.libtpu_name}:{"x".join(map(str, self.grid))}'

  @property
  def wrap(self) -> tuple[bool, bool, bool]:
    """Which axes close into a ring: v4 / v5p from a full 4x4x4 cube up, v5e / v6e along a
    full 16-chip side (as Cloud TPU builds them)."""
    if self.chip.grid_dims == 3:
      return (self.num_chips >= 64,) * 3
    return (self.grid[0] == 16, self.grid[1] == 16, False)


def chip_grid(num_chips: int, dims: int) -> tuple[int, ...]:
  """The grid Cloud TPU gives a slice of `num_chips` (a power of two): 2x2(x1) doubled
  one axis at a time, the last of the smallest first (v5p-1024 -> 8x8x8, v5e-64 -> 8x8)."""
  if num_chips < 1 or num_chips & (num_chips - 1):
    raise ValueError(f'{num_chips} chips: not a power of two')
  if num_chips < 4:
    return (1,) * (dims - 1) + (num_chips,)
  grid = [2, 2] + [1] * (dims - 2)
  while math.prod(grid) < num_chips:
    smallest = min(grid)
    grid[max(i for i, g in enumerate(grid) if g == smallest)] *= 2
  return tuple(grid)


def parse(name: str) -> Slice:
  """The slice `name` names: 'v5p-1024', 'v5e-256', 'v4-128' or a chip grid 'v5p:4x4x8'.

  Raises:
    ValueError: an unknown chip, a count that is not whole chips or not a power of two
      (give the grid instead), or a grid of the wrong rank.
  """
  known = ', '.join(CHIPS)
  match = re.fullmatch(r'(v\d+[a-z]*)(?:-(\d+)|:(\d+(?:x\d+)*))', name.strip())
  if not match or match.group(1) not in CHIPS:
    raise ValueError(
      f'Unknown TPU slice {name!r}; expected <chip>-<count> or <chip>:<grid>, e.g. '
      f'v5p-1024, v5e-256, v4-128 or v5p:4x4x8, with the chip one of {known}.'
    )
  chip = CHIPS[match.group(1)]
  if match.group(3):
    grid = tuple(int(g) for g in match.group(3).split('x'))
    if len(grid) != chip.grid_dims or min(grid) < 1:
      raise ValueError(f'{name}: a {chip.name} grid has {chip.grid_dims} positive sides.')
    return Slice(name, chip, grid)
  count = int(match.group(2))
  if count % chip.cores_per_chip:
    raise ValueError(
      f'{name}: {chip.name} slices count {chip.cores_per_chip} TensorCores per chip; '
      f'{count} is not a whole number of chips.'
    )
  try:
    grid = chip_grid(count // chip.cores_per_chip, chip.grid_dims)
  except ValueError as e:
    raise ValueError(f'{name}: {e}; give the grid instead, e.g. {chip.name}:4x4x12.') from e
  return Slice(name, chip, grid)


def libtpu_version() -> str | None:
  """The installed libtpu's version, or None when it is not installed."""
  try:
    import libtpu  # Optional (requirements-plan.txt, ~200 MB): only plans for TPUs need it.
  except ImportError:
    return None
  return getattr(libtpu, '__version__', 'unknown')


def _compile_only_libtpu(tpu: Slice):
  """libtpu, when it loads, looks for the TPU VM it runs on (metadata server, worker
  hosts, accelerator type) and takes a lock on the host's TPU; a compile-only topology
  needs none of them, so these say so (where the environment does not) instead of
  warnings, and several plans (or a plan and the tests) may compile at once."""
  os.environ.setdefault('ALLOW_MULTIPLE_LIBTPU_LOAD', '1')
  os.environ.setdefault('TPU_SKIP_MDS_QUERY', '1')
  os.environ.setdefault('TPU_WORKER_HOSTNAMES', 'localhost')
  os.environ.setdefault(
    'TPU_ACCELERATOR_TYPE', f'{tpu.chip.name}-{tpu.num_chips * tpu.chip.cores_per_chip}'
  )


def tpu_devices(tpu: Slice) -> list:
  """Compile-only TPU devices of the slice (one per chip), described by libtpu."""
  _compile_only_libtpu(tpu)
  topology = topologies.get_topology_desc(
    tpu.libtpu_topology,
    'tpu',
    chip_config_name='megacore' if tpu.chip.megacore else 'default',
    chips_per_host_bounds=(min(tpu.grid[0], 2), min(tpu.grid[1], 2), 1),
    num_slices=1,
    wrap=tpu.wrap,
  )
  if len(topology.devices) != tpu.num_chips:
    raise RuntimeError(
      f'libtpu describes {tpu.libtpu_topology} with {len(topology.devices)} devices, '
      f'expected one per chip ({tpu.num_chips}).'
    )
  return list(topology.devices)


def request_cpu_devices(count: int):
  """Asks JAX for `count` CPU devices; only possible before JAX has initialized its
  backends (call it first thing), and not needed when XLA_FLAGS already sets a count."""
  if 'xla_force_host_platform_device_count' in os.environ.get('XLA_FLAGS', ''):
    return
  try:
    jax.config.update('jax_num_cpu_devices', count)
  except RuntimeError:
    pass  # Already initialized: cpu_devices() says whether there are enough.


def cpu_devices(count: int) -> list:
  """`count` CPU devices standing in for the slice's chips.

  Raises:
    ValueError: JAX has fewer CPU devices (it was started with fewer).
  """
  devices = jax.devices('cpu')
  if len(devices) < count:
    raise ValueError(
      f'The CPU stand-in for the slice needs {count} CPU devices but JAX has {len(devices)}: '
      f'start it with XLA_FLAGS=--xla_force_host_platform_device_count={count} (or run '
      'python -m training.plan, which asks for them itself).'
    )
  return devices[:count]
