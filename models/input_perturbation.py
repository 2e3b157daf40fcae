"""A model's token embeddings, read and moved: where text gets a gradient.

Integrated gradients (evaluation/attribution.py) and adversarial training
(training/adversarial.py) move a model's input in embedding space. models/transformer.py's
`Embed` sows each call's token embeddings (the table's rows, [batch, length, token_dim],
before positions and token types are added) as 'intermediates' / NAME when the caller makes
that collection mutable, and adds COLLECTION / NAME to them when the caller passes that
collection with the params; without either it computes nothing for them.

The perturbation sits where the model's `Embed` sits ({'encoder': {'embed': {NAME: delta}}}
for a classifier, {'decoder': ...} for a GPT): `locate` reads the place from one forward
pass's intermediates, so no caller spells a model's module names, and `Perturbed` hands an
objective's loss a model whose every `apply` carries the perturbation.
"""

import dataclasses

import jax

COLLECTION = 'perturbations'
NAME = 'token_embedding'


@dataclasses.dataclass(frozen=True)
class Site:
  """Where a model's embeddings are: the module path of its `Embed`."""

  path: tuple[str, ...]  # e.g. ('encoder', 'embed').

  def tree(self, delta: jax.Array) -> dict:
    """The COLLECTION tree that adds `delta` [batch, length, token_dim] there."""
    tree = {NAME: delta}
    for name in reversed(self.path):
      tree = {name: tree}
    return tree

  def read(self, intermediates: dict) -> jax.Array:
    """The token embeddings [batch, length, token_dim] sown there."""
    node = intermediates
    for name in self.path:
      node = node[name]
    (embeddings,) = node[NAME]  # One call of this Embed per forward pass.
    return embeddings


def locate(intermediates: dict, stack: str | None = None) -> Site:
  """The one `Embed` of a forward pass's 'intermediates' (`stack`: the one under that
  top-level module, for an encoder-decoder, whose two stacks each embed).

  Raises:
    ValueError: no embeddings were sown, or several and `stack` does not choose one.
  """
  found = []

  def walk(node, path):
    if isinstance(node, dict):
      if NAME in node:
        found.append(Site(path))
      for name, child in node.items():
        if name != NAME:
          walk(child, (*path, name))

  walk(intermediates, ())
  if stack is not None:
    found = [site for site in found if site.path[:1] == (stack,)]
  if len(found) != 1:
    where = [('/'.join(site.path)) for site in found]
    raise ValueError(
      f'Expected one embedding layer{f" under {stack!r}" if stack else ""}; the forward '
      f'pass sowed token embeddings at {where or "no module"}.'
    )
  return found[0]


class Perturbed:
  """`model`, for an objective's `loss_fn(params, batch, rng, *, model)`, with every
  `apply` also passing the COLLECTION tree `perturbations`, and what each call returned
  kept in `outputs` (SMART compares the perturbed outputs with the clean ones); every
  other attribute is the model's own (as training/head_importance.HeadMasked does for
  head masks)."""

  def __init__(self, model, perturbations: dict):
    self._model, self._perturbations = model, perturbations
    self.outputs = []

  def apply(self, variables, *args, **kwargs):
    out = self._model.apply({**variables, COLLECTION: self._perturbations}, *args, **kwargs)
    self.outputs.append(out)
    return out

  def __getattr__(self, name):
    return getattr(self._model, name)


class Sowing:
  """`model` with every `apply` also keeping the sown 'intermediates' (in `sown`, one dict
  per call) and returning what the caller asked for: the embeddings' shape and place,
  read from an objective's loss under `jax.eval_shape`."""

  def __init__(self, model):
    self._model, self.sown = model, []

  def apply(self, variables, *args, mutable=False, **kwargs):
    wanted = [mutable] if isinstance(mutable, str) else list(mutable or [])
    out, state = self._model.apply(variables, *args, mutable=[*wanted, 'intermediates'], **kwargs)
    state = dict(state)
    self.sown.append(
      state['intermediates'] if 'intermediates' in wanted else state.pop('intermediates')
    )
    return (out, state) if wanted else out

  def __getattr__(self, name):
    return getattr(self._model, name)
