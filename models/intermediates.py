"""What a forward pass of the stack sows, layer by layer (the 'intermediates' collection).

models/transformer.py sows, when the caller makes 'intermediates' mutable, the stack's
summed embeddings ('embedded') and, per block, its output ('output') and its attention's
queries, keys and values ('attention' / 'queries', 'keys', 'values'). Where they sit in the
collection depends on how the layers are laid out: `block_0`, `block_1`, ... (a loop),
one `blocks` entry stacked on a leading layer axis (`scan_layers`), or one shared
`block` sown once per use (ALBERT's `share_layers`). `layers` reads any of the three
into one list, so a loss (objectives/distill.py) never sees the layout.
"""

import dataclasses

import jax


@dataclasses.dataclass(frozen=True)
class Layer:
  """One block's sown arrays."""

  output: jax.Array  # [batch, length, embed]
  query: jax.Array  # [batch, length, heads, kv]
  key: jax.Array  # [batch, length, heads, kv]
  value: jax.Array  # [batch, length, heads, kv]


@dataclasses.dataclass(frozen=True)
class Sown:
  """A stack's sown arrays: its embeddings' output and its blocks', bottom up."""

  embedded: jax.Array  # [batch, length, embed]
  layers: tuple[Layer, ...]


def _single(values):
  """A sown tuple of one call's value (a block called once per forward pass)."""
  if len(values) != 1:
    raise ValueError(f'Expected one sown value per layer, got {len(values)}.')
  return values[0]


def stack(intermediates: dict, name: str = 'encoder') -> Sown:
  """The sown arrays of stack `name` ('encoder' or 'decoder') of a model's forward pass.

  Args:
    intermediates: the 'intermediates' collection returned by `model.apply(...,
      mutable=['intermediates'])`.
    name: the stack's module name in the model (models/heads.py).

  Raises:
    ValueError: nothing was sown under `name` (the model has no such stack).
  """
  if name not in intermediates:
    raise ValueError(f'No sown {name!r} stack; the model sowed {sorted(intermediates)}.')
  tree = intermediates[name]
  embedded = _single(tree['embedded'])
  if 'blocks' in tree:  # nn.scan: one entry, each array stacked over the layers.
    scanned = tree['blocks']
    out, attn = _single(scanned['output']), scanned['attention']
    q, k, v = (_single(attn[n]) for n in ('queries', 'keys', 'values'))
    layers = tuple(Layer(out[i], q[i], k[i], v[i]) for i in range(out.shape[0]))
  elif 'block' in tree:  # One shared block, sown once per use, in order.
    shared, attn = tree['block'], tree['block']['attention']
    layers = tuple(
      Layer(*values)
      for values in zip(
        shared['output'], attn['queries'], attn['keys'], attn['values'], strict=True
      )
    )
  else:
    count = sum(1 for key in tree if key.startswith('block_'))
    layers = []
    for i in range(count):
      block = tree[f'block_{i}']
      attn = block['attention']
      layers.append(
        Layer(
          *(_single(x) for x in (block['output'], attn['queries'], attn['keys'], attn['values']))
        )
      )
    layers = tuple(layers)
  return Sown(embedded=embedded, layers=layers)
