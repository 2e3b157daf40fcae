"""Runs a transformers model and our converted one side by side and compares outputs.

Both run on CPU in float32 (transformers in eval mode) on padded batches of
random token ids at two sequence lengths. Our `segment_ids` are transformers'
`attention_mask` (1 real, 0 padding) and positions are 0..L-1 (RoBERTa's
offset is our `position_offset`). Differences are taken over real tokens only:
our stack returns zeros for padding queries. transformers gets the state dict
we read ourselves (safetensors, or `torch.load(weights_only=True)`), so
verifying never unpickles anything else.
"""

import os

import numpy as np

from models import convert, heads
from models.convert import checkpoint_io
from models.convert.converted import Converted, head_params

_LM_HEADS = (('masked_lm', heads.MaskedLM), ('causal_lm', heads.CausalLM))


def sample_batches(
  vocab_size: int, max_positions: int, pad_id: int, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
  """Two padded batches (tokens, mask) [3, L] at two lengths L; no real token is `pad_id`.

  Rows hold L, about 2L/3 and 2 real tokens, then padding (tokens `pad_id`, mask 0).
  """
  rng = np.random.default_rng(seed)
  batches = []
  for length in (min(8, max_positions), min(21, max_positions)):
    tokens = rng.integers(0, vocab_size - 1, size=(3, length))
    tokens += tokens >= pad_id  # Skip pad_id: RoBERTa derives positions from it.
    mask = (np.arange(length)[None] < np.array([[length], [2 * length // 3], [2]])).astype(np.int32)
    batches.append((np.where(mask, tokens, pad_id).astype(np.int32), mask))
  return batches


def _ours_seq2seq(c: Converted, tokens: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
  """An encoder-decoder's encoder states ('hidden') and decoder logits, the decoder fed
  the same padded rows as the encoder."""
  model = heads.Seq2SeqLM(c.config)
  variables = {'params': head_params(c, 'seq2seq_lm')}
  positions = np.broadcast_to(np.arange(tokens.shape[1], dtype=np.int32), tokens.shape)
  encoded = model.apply(variables, tokens, mask, positions, method=model.encode)
  logits = model.apply(variables, encoded, mask, tokens, mask, positions, method=model.decode)
  return {'hidden': np.asarray(encoded), 'logits': np.asarray(logits)}


def ours_outputs(c: Converted, tokens: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
  """Our final hidden states, pooled output (with a pooler) and logits (with a head)."""
  cfg = c.config
  if 'seq2seq_lm' in c.heads:
    return _ours_seq2seq(c, tokens, mask)
  lm = [(name, model) for name, model in _LM_HEADS if name in c.heads]
  params = {name: head_params(c, name) for name in ['backbone'] + [name for name, _ in lm]}

  # Run op by op: compiling each small model whole costs more than running it, and the
  # per-operation compiles are cached across models of the same widths.
  def run(params, tokens, mask):
    hidden, pooled = heads.Backbone(cfg).apply({'params': params['backbone']}, tokens, mask)
    out = {'hidden': hidden}  # [batch, length, embed]
    if pooled is not None:
      out['pooled'] = pooled  # [batch, embed]
    for name, model in lm:
      out['logits'] = model(cfg).apply({'params': params[name]}, tokens, mask)
    return out

  return {k: np.asarray(v) for k, v in run(params, tokens, mask).items()}


def _hf_model(src: str, auto_class: str, state: dict):
  os.environ.setdefault('USE_TF', '0')  # transformers would otherwise import TensorFlow.
  import transformers

  config = transformers.AutoConfig.from_pretrained(src)
  model_class = getattr(transformers, auto_class)._model_mapping[type(config)]
  model = model_class.from_pretrained(None, config=config, state_dict=dict(state))
  return model.float().eval()


def hf_outputs(src: str, c: Converted, batches: list) -> list[dict[str, np.ndarray]]:
  """transformers' outputs of the checkpoint in directory `src` on each of `batches`."""
  import torch  # Optional (requirements-parity.txt): only verification runs transformers.

  family = convert.get_family(c.family)
  tensors = checkpoint_io.read_tensors(src)
  state = {k: torch.from_numpy(np.asarray(v, np.float32).copy()) for k, v in tensors.items()}
  if 'seq2seq_lm' in c.heads:
    return _hf_seq2seq(_hf_model(src, family.heads['seq2seq_lm'].hf_auto, state), batches)
  models = {'backbone': _hf_model(src, 'AutoModel', state)}
  for name in ('masked_lm', 'causal_lm'):
    if name in c.heads:
      models['logits'] = _hf_model(src, family.heads[name].hf_auto, state)
  results = []
  with torch.no_grad():
    for tokens, mask in batches:
      inputs = dict(
        input_ids=torch.from_numpy(tokens).long(), attention_mask=torch.from_numpy(mask).long()
      )
      base = models['backbone'](**inputs)
      out = {'hidden': base.last_hidden_state.numpy()}
      if c.config.pooler:  # transformers may add a random pooler where the source had none.
        out['pooled'] = base.pooler_output.numpy()
      if 'logits' in models:
        out['logits'] = models['logits'](**inputs).logits.numpy()
      results.append(out)
  return results


def _hf_seq2seq(model, batches: list) -> list[dict[str, np.ndarray]]:
  import torch

  results = []
  with torch.no_grad():
    for tokens, mask in batches:
      ids, attention = torch.from_numpy(tokens).long(), torch.from_numpy(mask).long()
      out = model(
        input_ids=ids, attention_mask=attention, decoder_input_ids=ids,
        decoder_attention_mask=attention,
      )  # fmt: skip
      results.append(
        {'hidden': out.encoder_last_hidden_state.numpy(), 'logits': out.logits.numpy()}
      )
  return results


def compare(src: str, c: Converted, seed: int = 0) -> dict[str, float]:
  """Largest |ours - transformers| per output over real tokens, across both batches.

  Args:
    src: The Hugging Face directory `c` was converted from.
    c: Our converted checkpoint.
    seed: Seed of the random token ids.

  Returns:
    {'hidden': ..., 'pooled': ... (with a pooler), 'logits': ... (with a head)}.
  """
  pad_id = c.hf_config.get('pad_token_id')
  pad_id = 0 if pad_id is None else pad_id
  batches = sample_batches(c.config.vocab_size, c.config.max_positions, pad_id, seed)
  diffs: dict[str, float] = {}
  for (tokens, mask), theirs in zip(batches, hf_outputs(src, c, batches), strict=True):
    ours = ours_outputs(c, tokens, mask)
    if set(ours) != set(theirs):
      raise ValueError(
        f'Outputs differ in kind: ours {sorted(ours)}, transformers {sorted(theirs)}.'
      )
    for name, ours_value in ours.items():
      diff = np.abs(ours_value - theirs[name])
      if name != 'pooled':  # Per token: real tokens only.
        diff = diff[mask.astype(bool)]
      diffs[name] = max(diffs.get(name, 0.0), float(diff.max()))
  return diffs


def report(diffs: dict[str, float], tolerance: float) -> bool:
  """Prints the differences; returns whether all are within `tolerance`."""
  ok = all(d <= tolerance for d in diffs.values())
  for name, d in diffs.items():
    print(f'verify: max |ours - transformers| of {name:<7} {d:.3e}')
  print(f'verify: {"OK" if ok else "FAILED"} (tolerance {tolerance:g})')
  return ok
