"""Checkpoint import and export: Hugging Face (and original TF BERT) <-> our params.

    python -m models.convert --from hf --family bert SRC OUT [--verify]
    python -m models.convert --from tf-bert SRC OUT
    python -m models.convert --to hf SRC OUT

Modules: `mapping` (the shared machinery: rules, tensor layouts, tree walking,
shape checks), `checkpoint_io` (HF directories; the pickle safety rule),
`safetensors_format`, `converted` (our output directory), `hf` (import and
export), `tf_bert` (google-research/bert checkpoints), `verify` (runs
transformers and ours side by side), `scan` (looped <-> scanned layer layout;
export unstacks scanned params with it), and one module per family group
(`bert`, `mobilebert`, `gpt2`, `t5`, `bart`), found through `FAMILIES` below.

The family-module interface. A family module defines
`FAMILIES: dict[str, mapping.Family]`; a `Family` holds:

- `name`, `prefix` (transformers' base_model_prefix, e.g. 'bert'; source
  names are written with it, and checkpoints saved from the bare base model
  get it added), `stack` (our top-level group: 'encoder' or 'decoder').
- `config_from_hf(config_json: dict) -> TransformerConfig`: fills in
  transformers' defaults for absent keys and raises a ValueError naming any
  value we cannot run exactly (the `pooler` field is set later, from the weights).
- `config_to_hf(cfg) -> dict`: the config.json fields (with 'model_type');
  export checks `config_from_hf(config_to_hf(cfg))` reproduces `cfg`.
- `rules(cfg) -> list[mapping.Rule | mapping.Tied]`: every tensor the family
  can hold, base model and heads: source name, our '/'-joined param path(s),
  and a `mapping.Layout` (COPY, LINEAR, LINEAR_TO_HEADS, FUSED_QKV, ...; add a
  layout to `mapping` when a family needs a new one). `Tied` marks a source
  alias of another tensor. Rules whose tensor is absent are skipped on import;
  tensors no rule takes are listed as unconverted, never silently dropped.
- `heads: dict[str, mapping.Head]`: our models in the union (Flax module
  factory, transformers Auto class, export architecture), base model first.
- `ignored`: regexes of source buffers that are not parameters (position_ids).

A new family is a module with such a `FAMILIES` dict and an entry per name in
`FAMILIES` below; nothing else changes (an encoder-decoder's one head is
'seq2seq_lm', which `verify` runs with decoder inputs). torch, transformers and
TensorFlow are imported lazily, inside the functions that need them.
"""

import importlib

# Family name -> the module path that defines it in its FAMILIES dict.
FAMILIES = {
  'bert': 'models.convert.bert',
  'roberta': 'models.convert.bert',
  'albert': 'models.convert.bert',
  'electra': 'models.convert.bert',
  'distilbert': 'models.convert.bert',
  'mobilebert': 'models.convert.mobilebert',
  'gpt2': 'models.convert.gpt2',
  'openai-gpt': 'models.convert.gpt2',  # GPT-1.
  't5': 'models.convert.t5',
  'bart': 'models.convert.bart',
}


def get_family(name: str):
  """Returns the `mapping.Family` of `name` (e.g. 'roberta')."""
  if name not in FAMILIES:
    raise ValueError(f'Unknown family {name!r}; supported: {", ".join(FAMILIES)}.')
  return importlib.import_module(FAMILIES[name]).FAMILIES[name]
