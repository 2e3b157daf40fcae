"""Every family trains through the real training loop at tiny width (CPU, 8 devices)."""

import json
import os

import numpy as np
import pytest

from configs import quickstart
from evaluation import during_training
from models import presets

FAMILIES = {
  'bert-base': 'objectives.mlm',
  'roberta-base': 'objectives.mlm',
  'albert-base': 'objectives.mlm',  # Factorized embeddings, one shared block.
  'electra-small': 'objectives.mlm',  # Factorized, no pooler.
  'distilbert': 'objectives.mlm',  # No token types.
  'tinybert-4': 'objectives.mlm',
  'ernie-1.0': 'objectives.mlm',  # ReLU.
  'gpt1': 'objectives.clm',  # Post-LN decoder.
  'gpt2-small': 'objectives.clm',
  'gpt3-small': 'objectives.clm',  # Separate head_dim field.
  't5-small': 'objectives.denoising',  # RMS norm, relative buckets, no biases, tied + rescaled.
  't5-v1_1-small': 'objectives.denoising',  # Gated GELU, untied output.
  'bart-base': 'objectives.denoising',  # Post-LN encoder-decoder, learned positions offset 2.
  'mass-base': 'objectives.mass',  # One fragment of ~50% per segment.
}


@pytest.mark.slow
@pytest.mark.parametrize('preset', FAMILIES)
def test_family_trains_at_tiny_width(tmp_path, spm_path, preset):
  config = quickstart.get_config()
  config.model.preset = preset
  config.objective.module = FAMILIES[preset]
  config.model.num_layers, config.model.d_model = 2, 64
  if presets.get_config(preset).num_decoder_layers:
    config.model.num_decoder_layers = 2
  config.model.num_heads, config.model.mlp_dim = 2, 128
  if presets.get_config(preset).embed_dim:
    config.model.embed_dim = 32
  config.data.tokenizer_path = spm_path
  config.batch_size, config.seq_len, config.total_steps = 8, 64, 12
  config.log_every_steps, config.eval_every_steps = 1, 0
  config.optimizer.learning_rate, config.optimizer.warmup_steps = 3e-3, 2
  config.optimizer.warmup_ratio = 0.0
  during_training.train_and_evaluate(config, str(tmp_path))

  with open(os.path.join(tmp_path, 'metrics.jsonl')) as f:
    losses = [json.loads(line)['loss'] for line in f]
  assert len(losses) == 12 and np.all(np.isfinite(losses))
  assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.2, losses
