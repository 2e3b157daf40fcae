"""Hugging Face's Flax BERT (`FlaxBertForMaskedLM`) and GPT-2 (`FlaxGPT2LMHeadModel`) train
step, the reference that `python -m bench.throughput --compare hf` times against ours.

The HF model is built from our preset's sizes (`hf_config`: bert-base gives exactly
`BertConfig()`'s defaults, gpt2-small `GPT2Config()`'s), randomly initialized from a
seed (`_do_init=True`, nothing downloaded), with every dropout at 0. Its step is what an
HF Flax user writes: the model called with `params=` inside `jax.value_and_grad`, the
loss and metrics of our objective (`metrics.token_cross_entropy` on the logits at
every position, weighted by the batch's `weights`), then the same optax optimizer as
ours; one jitted function, (params, opt_state) donated, data-parallel over our mesh
(parameters replicated, rows split like ours).

HF's models take a padding mask only, so their attention also crosses the packed
segments of a row: the same work as ours (which masks them), not the same function.

`transformers` (and the torch it pulls in) is imported inside the functions that use
it: a heavy optional dependency (requirements-parity.txt), absent on a bare
accelerator machine.
"""

import functools

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec

from models.transformer import TransformerConfig
from objectives.shared import metrics
from training import partitioning

# Our activation names -> HF's (`hidden_act` / `activation_function`).
_ACTIVATIONS = {'gelu': 'gelu', 'gelu_tanh': 'gelu_new', 'relu': 'relu'}
# The batch arrays the HF step reads.
INPUTS = ('inputs', 'segment_ids', 'positions', 'targets', 'weights')


def family(cfg: TransformerConfig) -> str:
  """'bert' (post-LN encoder, learned positions) or 'gpt2' (pre-LN causal decoder)."""
  learned = cfg.position == 'learned' and cfg.use_bias and cfg.norm == 'layer'
  plain = not (cfg.gated_mlp or cfg.embed_dim or cfg.share_layers or cfg.num_decoder_layers)
  plain = plain and cfg.tie_embeddings and not cfg.position_offset and not cfg.adapter_dim
  plain = plain and cfg.kv_dim * cfg.num_heads == cfg.d_model and cfg.scale_attention
  if learned and plain and not cfg.causal and not cfg.pre_norm and cfg.embed_norm:
    return 'bert'
  if learned and plain and cfg.causal and cfg.pre_norm and cfg.final_norm:
    return 'gpt2'
  raise ValueError(
    'Hugging Face reference steps exist for BERT-like encoders (post-LN, learned positions,'
    ' tied output) and GPT-2-like decoders (pre-LN, causal); this config is neither:'
    f' causal={cfg.causal}, pre_norm={cfg.pre_norm}, position={cfg.position!r},'
    f' norm={cfg.norm!r}, embed_dim={cfg.embed_dim}, share_layers={cfg.share_layers}.'
  )


def hf_config(cfg: TransformerConfig):
  """The `BertConfig` / `GPT2Config` of our config's sizes, every dropout 0."""
  from transformers import BertConfig, GPT2Config  # Heavy optional dependency (torch).

  activation = _ACTIVATIONS[cfg.activation]
  if family(cfg) == 'bert':
    return BertConfig(
      vocab_size=cfg.vocab_size,
      hidden_size=cfg.d_model,
      num_hidden_layers=cfg.num_layers,
      num_attention_heads=cfg.num_heads,
      intermediate_size=cfg.mlp_dim,
      hidden_act=activation,
      max_position_embeddings=cfg.max_len,
      type_vocab_size=cfg.type_vocab_size,
      layer_norm_eps=cfg.layer_norm_eps,
      hidden_dropout_prob=0.0,
      attention_probs_dropout_prob=0.0,
    )
  return GPT2Config(
    vocab_size=cfg.vocab_size,
    n_positions=cfg.max_len,
    n_embd=cfg.d_model,
    n_layer=cfg.num_layers,
    n_head=cfg.num_heads,
    n_inner=None if cfg.mlp_dim == 4 * cfg.d_model else cfg.mlp_dim,  # None: 4 x n_embd.
    activation_function=activation,
    layer_norm_epsilon=cfg.layer_norm_eps,
    resid_pdrop=0.0,
    embd_pdrop=0.0,
    attn_pdrop=0.0,
  )


def build_model(cfg: TransformerConfig, *, seed: int):
  """The HF Flax model with our config's sizes and compute dtype, randomly initialized."""
  from transformers import FlaxBertForMaskedLM, FlaxGPT2LMHeadModel  # Heavy (torch).

  cls = FlaxBertForMaskedLM if family(cfg) == 'bert' else FlaxGPT2LMHeadModel
  return cls(hf_config(cfg), seed=seed, dtype=jnp.dtype(cfg.compute_dtype), _do_init=True)


def loss_fn(params, batch: dict, *, model, bert: bool):
  """Our objective's loss on the HF model's logits at every position."""
  attention_mask = (batch['segment_ids'] > 0).astype(jnp.int32)  # Padding only.
  kwargs = dict(attention_mask=attention_mask, position_ids=batch['positions'])
  if bert:
    kwargs['token_type_ids'] = jnp.zeros_like(batch['inputs'])
  logits = model(batch['inputs'], **kwargs, params=params, train=False).logits
  return metrics.token_cross_entropy(logits, batch['targets'], batch['weights'])


def train_step(state, batch: dict, *, model, tx, bert: bool):
  """One optimizer step of the HF model; `state` is (params, opt_state)."""
  params, opt_state = state
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  (_, values), grads = grad_fn(params, batch, model=model, bert=bert)
  updates, opt_state = tx.update(grads, opt_state, params)
  params = optax.apply_updates(params, updates)
  values = dict(values, grad_norm=(optax.tree.norm(grads), jnp.float32(1.0)))
  return (params, opt_state), values


def train_state(model, tx, mesh):
  """(params, opt_state) replicated over `mesh`, and their shardings."""
  replicated = NamedSharding(mesh, PartitionSpec())
  state = (model.params, tx.init(model.params))
  shardings = jax.tree.map(lambda _: replicated, state)
  return jax.device_put(state, shardings), shardings


def jit_train_step(cfg: TransformerConfig, model, tx, state_shardings, mesh):
  """`train_step` jitted: state donated, rows split over the mesh like ours."""
  batch_sharding = partitioning.batch_sharding(mesh)
  replicated = NamedSharding(mesh, PartitionSpec())
  step = functools.partial(train_step, model=model, tx=tx, bert=family(cfg) == 'bert')
  return jax.jit(
    step,
    in_shardings=(state_shardings, {name: batch_sharding for name in INPUTS}),
    out_shardings=(state_shardings, replicated),
    donate_argnums=0,
  )


def model_batches(batches: list[dict]) -> list[dict]:
  """The arrays of our batches that the HF step reads."""
  return [{name: b[name] for name in INPUTS} for b in batches]
