"""The device mesh and the only place logical axis names meet mesh axes.

The mesh has four axes: `data` (pure data parallelism), `fsdp` (data
parallelism whose parameters and optimizer state are sharded, ZeRO-3 style),
`sequence` (sequence, or context, parallelism: the activations' `length` axis
split over devices) and `tensor` (Megatron-style tensor parallelism over heads,
MLP and vocab). A strategy is a rule set picked by name in `config.mesh.strategy`;
axes of size 1 make a rule a no-op, so 'fsdp_tp' on an (8, 1, 1, 1) mesh is plain DP.

Sequence parallelism ('fsdp_tp_sp') maps `length` to `sequence`: embeddings, norms,
MLPs, heads and losses work per position on their slice of every row; attention
gathers the keys and values of the whole row ('kv_length' stays unsplit, so XLA
all-gathers K/V over `sequence` before the product and reduce-scatters their
gradients after) while each device keeps its own queries. A `sequence` device holds
other tokens of the same rows, so it is a data-parallel device for the gradients, and
the parameters are sharded over (fsdp, sequence) as FSDP shards them over fsdp.
"""

import math

import flax.linen as nn
import jax
import optax
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

# `sequence` sits beside `tensor`, on the fast links of a topology-aware mesh: both
# exchange activations inside every layer.
MESH_AXES = ('data', 'fsdp', 'sequence', 'tensor')
BATCH_AXES = ('data', 'fsdp')

# Activations: the batch is split over every data-like axis.
_ACTIVATION_RULES = (
  ('batch', BATCH_AXES),
  ('length', None),
  ('kv_length', None),  # Attention's keys and values: always the whole row.
  ('act_embed', None),
)
_SEQUENCE_ACTIVATION_RULES = (
  ('batch', BATCH_AXES),
  ('length', 'sequence'),
  ('kv_length', None),
  ('act_embed', None),
)
_TENSOR_ACTIVATION_RULES = (
  ('act_heads', 'tensor'),
  ('act_kv', None),
  ('act_mlp', 'tensor'),
  ('act_vocab', 'tensor'),
)
_REPLICATED_ACTIVATION_RULES = (
  ('act_heads', None),
  ('act_kv', None),
  ('act_mlp', None),
  ('act_vocab', None),
)
_REPLICATED_PARAM_RULES = (
  ('embed', None),
  ('vocab', None),
  ('heads', None),
  ('kv', None),
  ('mlp', None),
  ('position', None),
  ('token_type', None),
  ('factor', None),  # A factorized embedding width E (ALBERT): small, kept whole.
  ('relative_buckets', None),  # T5's relative position bias table: tiny.
  ('layers', None),  # The stacked axis of scanned layers: every device holds every layer.
  ('char_vocab', None),  # ELMo's character table and CNN: small, kept whole.
  ('char_embed', None),
  ('conv_width', None),
  ('classes', None),  # Classifier outputs (NSP/SOP, task heads): a handful of labels.
  ('adapter', None),  # Houlsby adapters' bottleneck: small, kept whole.
  ('lora', None),  # LoRA's rank: a handful.
  ('prompt', None),  # Soft-prompt vectors.
  ('prefix', None),  # P-tuning v2's per-layer key/value prefixes.
)
_FSDP_PARAM_RULES = (('embed', 'fsdp'),) + _REPLICATED_PARAM_RULES[1:]
_FSDP_TP_PARAM_RULES = (
  ('embed', 'fsdp'),
  ('vocab', 'tensor'),
  ('heads', 'tensor'),
  ('kv', None),
  ('mlp', 'tensor'),
  ('position', None),
  ('token_type', None),
  ('factor', None),
  ('relative_buckets', None),
  ('layers', None),
  ('char_vocab', None),
  ('char_embed', None),
  ('conv_width', None),
  ('classes', None),
  ('adapter', None),
  ('lora', None),
  ('prompt', None),
  ('prefix', None),
)

# Sequence parallelism: the sequence devices also shard the parameters, as fsdp's do.
_FSDP_TP_SP_PARAM_RULES = (('embed', ('fsdp', 'sequence')),) + _FSDP_TP_PARAM_RULES[1:]

RULES = {
  'dp': _ACTIVATION_RULES + _REPLICATED_ACTIVATION_RULES + _REPLICATED_PARAM_RULES,
  'fsdp': _ACTIVATION_RULES + _REPLICATED_ACTIVATION_RULES + _FSDP_PARAM_RULES,
  'fsdp_tp': _ACTIVATION_RULES + _TENSOR_ACTIVATION_RULES + _FSDP_TP_PARAM_RULES,
  'fsdp_tp_sp': _SEQUENCE_ACTIVATION_RULES + _TENSOR_ACTIVATION_RULES + _FSDP_TP_SP_PARAM_RULES,
}
SEQUENCE_STRATEGIES = ('fsdp_tp_sp',)  # The rule sets that use the `sequence` axis.


def logical_rules(strategy: str) -> tuple:
  if strategy not in RULES:
    raise ValueError(f'Unknown mesh.strategy {strategy!r}; expected one of {", ".join(RULES)}.')
  return RULES[strategy]


def mesh_shape(mesh_cfg, num_devices: int) -> tuple[int, int, int, int]:
  """(data, fsdp, sequence, tensor) sizes: resolves -1 ("the remaining devices") and checks
  the product is the device count. A config without `sequence` has a sequence axis of 1."""
  sizes = [mesh_cfg.data, mesh_cfg.fsdp, getattr(mesh_cfg, 'sequence', 1), mesh_cfg.tensor]
  described = ', '.join(f'mesh.{a}={s}' for a, s in zip(MESH_AXES, sizes, strict=True))
  if sizes.count(-1) > 1:
    raise ValueError(f'At most one mesh axis may be -1, got {described}.')
  if any(s == 0 or s < -1 for s in sizes):
    raise ValueError(f'Mesh axis sizes must be positive or -1, got {described}.')
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if num_devices % known:
      raise ValueError(
        f'The mesh ({described}) does not divide the {num_devices} devices: '
        f'{known} does not divide {num_devices}.'
      )
    sizes[sizes.index(-1)] = num_devices // known
  if math.prod(sizes) != num_devices:
    raise ValueError(
      f'The mesh ({described}) has {math.prod(sizes)} devices but there are {num_devices}; '
      'make the product equal the device count or set one axis to -1.'
    )
  return tuple(sizes)


def make_mesh(mesh_cfg, devices=None) -> Mesh:
  """A (data, fsdp, sequence, tensor) mesh over all devices (or `devices`)."""
  devices = jax.devices() if devices is None else list(devices)
  shape = mesh_shape(mesh_cfg, len(devices))
  strategy = getattr(mesh_cfg, 'strategy', None)
  if shape[2] > 1 and strategy is not None and strategy not in SEQUENCE_STRATEGIES:
    raise ValueError(
      f'mesh.sequence={shape[2]} splits rows over devices, but mesh.strategy={strategy!r} '
      f"does not use that axis (its devices would repeat each other's work); use "
      f'{" or ".join(map(repr, SEQUENCE_STRATEGIES))}, or mesh.sequence=1.'
    )
  # Topology-aware on TPU/GPU (ICI-near devices share the fast axes); a reshape on CPU.
  return Mesh(mesh_utils.create_device_mesh(shape, devices=devices), MESH_AXES)


def check_batch(batch_size: int, mesh: Mesh):
  """The global batch must split evenly over the data-like mesh axes."""
  ways = math.prod(mesh.shape[a] for a in BATCH_AXES)
  if batch_size % ways:
    raise ValueError(
      f'batch_size={batch_size} cannot be split over the {ways} data-parallel devices '
      f'(mesh data={mesh.shape["data"]} x fsdp={mesh.shape["fsdp"]}); use a multiple of {ways}.'
    )


def check_length(seq_len: int, mesh: Mesh):
  """Sequence parallelism splits every row evenly over the `sequence` axis."""
  ways = mesh.shape['sequence']
  if seq_len % ways:
    raise ValueError(
      f'seq_len={seq_len} cannot be split over the {ways} sequence-parallel devices '
      f'(mesh.sequence={ways}); use a multiple of {ways}.'
    )


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Sharding of every [batch, ...] input array, whatever its rank: the leading batch
  axis over (data, fsdp), the others replicated (per-row labels [batch] included; under
  sequence parallelism the model's first constraint slices each device's positions)."""
  return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def global_batch(host_batch: dict, sharding: NamedSharding) -> dict:
  """Assembles this process's rows of every array into global arrays sharded by `sharding`."""
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in host_batch.items()}


def logical_shardings(abstract_tree, mesh: Mesh, rules) -> object:
  """NamedShardings for a tree whose leaves may be nn.LogicallyPartitioned boxes (others
  are replicated). Mapped leaf by leaf, so empty nodes (optax's MaskedNode for the
  parameters a masked optimizer skips) keep their place in the tree."""

  def sharding(leaf):
    if isinstance(leaf, nn.Partitioned) and isinstance(leaf.value, optax.MaskedNode):
      return leaf.value  # A masked optimizer's placeholder inside a box: nothing to shard.
    spec = leaf.get_partition_spec() if isinstance(leaf, nn.Partitioned) else PartitionSpec()
    return nn.logical_to_mesh_sharding(spec, mesh, rules)

  return jax.tree.map(sharding, abstract_tree, is_leaf=lambda x: isinstance(x, nn.Partitioned))
