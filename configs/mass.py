"""MASS (Song et al. 2019) on the embedded corpus (CPU): mask one contiguous fragment
of 50% of each segment's tokens; the decoder predicts only that fragment.

  python train.py --config configs/mass.py --workdir /tmp/mass
  python -m tools.show --config configs/mass.py --workdir /tmp/mass

Hardware: any laptop CPU, no network. The 'mass-base' preset at a tiny width
(2 + 2 layers, 128 wide). Expected: not yet measured on this corpus; the
training test tests/training/test_denoising_trains.py shows the loss falling.
"""

from configs import base


def get_config():
  c = base.get_config()
  c.model.preset = 'mass-base'
  c.model.num_layers, c.model.num_decoder_layers = 2, 2
  c.model.d_model, c.model.num_heads, c.model.mlp_dim = 128, 2, 512
  c.objective.module = 'objectives.mass'
  c.data.source = 'embedded'
  c.data.vocab_size = 4096
  c.total_steps = 500
  c.batch_size = 32
  c.seq_len = 128
  c.log_every_steps = 25
  c.checkpoint_every_steps = 250
  c.eval_every_steps = 250
  c.optimizer.learning_rate = 1e-3
  c.optimizer.warmup_steps = 60
  with c.unlocked():
    c.objective.fragment_rate = 0.5  # MASS: fragment length = round(rate * segment tokens).
  return c
