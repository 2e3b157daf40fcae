"""Structured attention-head pruning (Michel et al. 2019, "Are Sixteen Heads Really
Better than One?"): choose the least important heads, then remove them physically.

A head's importance is |d loss / d xi_h|, the gradient of the loss with respect to a
multiplier xi_h of the head's output (the 'head_mask' collection of
models/transformer.Attention; training/head_importance.py computes it). `choose_heads`
normalizes it per layer (l2) and picks the globally least important heads;
`remove_heads` deletes their slices from the query, key and value kernels and biases
and from the output kernel, and records the heads each layer keeps in
`TransformerConfig.layer_heads`, so the pruned model has smaller matrices (fewer
FLOPs, a real speed-up) and computes exactly what the full model computes with a head
mask of zeros on those heads.

Heads are numbered within their layer as the layer has them now: after a first
pruning, head 0 of a layer is the first head it kept. A layer may lose every head
(layer_heads entry 0): its attention sub-layer is then its output bias alone and the
residual stream carries on, as Michel et al. allow; `min_heads_per_layer` forbids it.
Supported: one looped stack (`encoder/block_<i>` or a decoder-only `decoder/block_<i>`);
not a scanned or shared stack, nor an encoder-decoder (TransformerConfig.layer_heads
has one entry per layer of a single stack).
"""

import dataclasses
import re
from collections.abc import Mapping

import numpy as np

from models.convert import mapping
from models.transformer import TransformerConfig

# Self-attention modules of one looped stack: '<prefix>(encoder|decoder)/block_<i>/attention'.
_ATTENTION = re.compile(r'^(.*?(?:encoder|decoder))/block_(\d+)/attention$')
PROJECTIONS = ('query', 'key', 'value', 'out')  # out: [heads, kv, embed]; others: heads axis 1.


def choose_heads(
  importance: np.ndarray, fraction: float, min_heads_per_layer: int = 0
) -> dict[int, list[int]]:
  """The heads to remove: the globally least important after per-layer normalization.

  Args:
    importance: [layers, heads] head importance (training/head_importance.py): a layer's
      present heads first, then NaN for the heads it no longer has (pruned before).
    fraction: the share of the present heads to remove, in [0, 1]; round(fraction x
      present heads) are removed, at most all but one of the model.
    min_heads_per_layer: heads every layer keeps (0: a layer may lose them all).

  Returns:
    {layer: sorted head indices (of the layer's present heads)}, for the layers that
    lose heads. Each layer's importance is divided by its l2 norm (Michel et al.'s
    normalization, so layers are compared on one scale); ties go to the lower (layer,
    head) first.

  Raises:
    ValueError: a fraction outside [0, 1], a negative importance, a bad minimum.
  """
  importance = np.asarray(importance, np.float64)
  if importance.ndim != 2:
    raise ValueError(f'importance has shape {importance.shape}; expected [layers, heads].')
  if not 0.0 <= fraction <= 1.0:
    raise ValueError(f'fraction={fraction} must be in [0, 1]: the share of heads to remove.')
  present = ~np.isnan(importance)
  if np.any(importance[present] < 0):
    raise ValueError('importance holds negative values: it is |gradient|, >= 0.')
  counts = present.sum(axis=1)  # [layers]
  for layer, count in enumerate(counts):
    if not present[layer, :count].all():
      raise ValueError(
        f"importance of layer {layer}: {importance[layer].tolist()}; a layer's present "
        'heads come first, NaN only after them (the heads it no longer has).'
      )
  if min_heads_per_layer < 0 or np.any(counts < min_heads_per_layer):
    raise ValueError(
      f'min_heads_per_layer={min_heads_per_layer} must be in 0..{int(counts.min())} (the '
      'fewest heads a layer has).'
    )
  values = np.where(present, importance, 0.0)
  norms = np.sqrt(np.sum(values**2, axis=1, keepdims=True))  # [layers, 1]
  normalized = np.where(norms > 0, values / np.where(norms > 0, norms, 1.0), 0.0)
  total = int(present.sum())
  to_remove = min(round(fraction * total), total - 1)
  order = np.lexsort((np.arange(values.size), normalized.reshape(-1)))  # Score, then index.
  left = counts - min_heads_per_layer  # Heads each layer may still lose.
  chosen: dict[int, list[int]] = {}
  for flat in order:
    if to_remove == 0:
      break
    layer, head = divmod(int(flat), values.shape[1])
    if not present[layer, head] or left[layer] == 0:
      continue
    chosen.setdefault(layer, []).append(head)
    left[layer] -= 1
    to_remove -= 1
  return {layer: sorted(heads) for layer, heads in sorted(chosen.items())}


def attention_modules(params: Mapping) -> dict[int, str]:
  """{layer: path of its self-attention module} of the one looped stack in `params`."""
  found, stacks = {}, set()
  for name in mapping.flatten(dict(params)):
    module = name.rsplit('/', 2)[0]  # '<...>/attention' of '<...>/attention/query/kernel'.
    match = _ATTENTION.match(module)
    if match:
      stacks.add(match.group(1))
      found[int(match.group(2))] = module
  if len(stacks) != 1:
    raise ValueError(
      f'Head pruning needs the params of one looped stack (encoder/block_<i> or '
      f'decoder/block_<i>); found {sorted(stacks) or "none"}.'
    )
  return dict(sorted(found.items()))


def _check_config(cfg: TransformerConfig, layers: int):
  if cfg.scan_layers or cfg.share_layers or cfg.num_decoder_layers:
    raise ValueError(
      'remove_heads needs looped layers of one stack: scan_layers='
      f'{cfg.scan_layers}, share_layers={cfg.share_layers}, num_decoder_layers='
      f'{cfg.num_decoder_layers} (convert a scanned run with tools/relayout.py first).'
    )
  if layers != cfg.num_layers:
    raise ValueError(f'params hold {layers} blocks, cfg.num_layers={cfg.num_layers}.')


def remove_heads(
  params: Mapping, cfg: TransformerConfig, prune: Mapping[int, list[int]]
) -> tuple[dict, TransformerConfig]:
  """Removes heads from the params and the config of a model.

  Args:
    params: the model's whole nested dict of arrays (NumPy or JAX), e.g. a
      SequenceClassifier's {'encoder': {'block_0': {'attention': {'query': {'kernel':
      [embed, heads, kv], 'bias': [heads, kv]}, ..., 'out': {'kernel': [heads, kv,
      embed], 'bias': [embed]}}, ...}, ...}, 'pooler': ..., 'classifier': ...}.
    cfg: its TransformerConfig (layer_heads set when heads were removed before).
    prune: {layer: indices of heads to remove, among the layer's present heads}.

  Returns:
    (params with the heads' slices removed (NumPy; untouched arrays as they were), cfg
    with `layer_heads` set). The result applied to any input equals the full model
    applied with a head mask of zeros on the removed heads.

  Raises:
    ValueError: a layer or head that does not exist, a repeated head, params that do
      not match cfg, or an attention parameter this function does not know.
  """
  modules = attention_modules(params)
  _check_config(cfg, len(modules))
  flat = mapping.flatten(dict(params))
  heads = [cfg.heads_of(layer) for layer in range(cfg.num_layers)]
  for layer, removed in prune.items():
    if not isinstance(layer, int | np.integer) or not 0 <= layer < cfg.num_layers:
      raise ValueError(f'prune has layer {layer!r}; layers are 0..{cfg.num_layers - 1}.')
    removed = [int(h) for h in removed]
    if len(set(removed)) != len(removed) or any(not 0 <= h < heads[layer] for h in removed):
      raise ValueError(
        f'prune[{layer}]={list(removed)}: heads must be distinct, in 0..{heads[layer] - 1} '
        f'(layer {layer} has {heads[layer]} heads now).'
      )
    keep = np.array([h for h in range(heads[layer]) if h not in removed], np.int64)
    module = modules[layer]
    for name in [n for n in flat if n.startswith(f'{module}/')]:
      projection, leaf = name[len(module) + 1 :].split('/', 1)
      if projection not in PROJECTIONS or leaf not in ('kernel', 'bias'):
        raise ValueError(f'{name}: remove_heads knows only the kernel and bias of {PROJECTIONS}.')
      if projection == 'out' and leaf == 'bias':
        continue  # [embed]: no heads axis.
      axis = 0 if projection == 'out' or leaf == 'bias' else 1
      array = np.asarray(flat[name])
      if array.ndim != (2 if leaf == 'bias' else 3) or array.shape[axis] != heads[layer]:
        raise ValueError(
          f'{name} has shape {array.shape}: {array.shape[axis]} heads on axis {axis}, but '
          f'cfg gives layer {layer} {heads[layer]} heads (cfg.layer_heads={cfg.layer_heads}).'
        )
      flat[name] = np.take(array, keep, axis=axis)
    heads[layer] = len(keep)
  return mapping.unflatten(flat), dataclasses.replace(cfg, layer_heads=tuple(heads))
