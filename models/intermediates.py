"""What a forward pass of the stack sows, layer by layer (the 'intermediates' collection).

models/transformer.py sows, when the caller makes 'intermediates' mutable, the stack's
summed embeddings ('embedded') and, per block, its output ('output') and its attention's
queries, keys and values ('attention' / 'queries', 'keys', 'values'). Where they sit in the
collection depends on how the layers are laid out: `block_0`, `block_1`, ... (a loop),
one `blocks` entry stacked on a leading layer axis (`scan_layers`), or one shared
`block` sown once per use (ALBERT's `share_layers`). `layers` reads any of the three
into one list, so a loss (objectives/distill.py) never sees the layout.

The attention distributions are a collection of their own, 'attention_weights' (each
attention sub-layer's 'probs' [batch, heads, q_len, kv_len]), made only when the caller
asks for it; `attention_weights` reads them per layer in the same three layouts.
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


def attention_weights(
  collection: dict, name: str = 'encoder', sublayer: str = 'attention'
) -> list[jax.Array]:
  """Per layer, bottom up, the attention distributions [batch, heads, q_len, kv_len]
  (fp32, rows summing to 1 over the keys a query may see) of stack `name`.

  Args:
    collection: the 'attention_weights' collection returned by `model.apply(...,
      mutable=['attention_weights'])`.
    name: the stack's module name in the model ('encoder', 'decoder').
    sublayer: 'attention' (self-attention) or a decoder's 'cross_attention'.

  Raises:
    ValueError: nothing was sown under `name` (the model has no such stack, or its
      attention is not the Transformer stack's).
  """
  if name not in collection:
    raise ValueError(f'No attention weights of {name!r}; the model sowed {sorted(collection)}.')
  tree = collection[name]
  if 'blocks' in tree:  # nn.scan: [layers, batch, heads, q_len, kv_len].
    stacked = _single(tree['blocks'][sublayer]['probs'])
    return [stacked[i] for i in range(stacked.shape[0])]
  if 'block' in tree:  # One shared block, sown once per use, in order.
    return list(tree['block'][sublayer]['probs'])
  count = sum(1 for key in tree if key.startswith('block_'))
  return [_single(tree[f'block_{i}'][sublayer]['probs']) for i in range(count)]
