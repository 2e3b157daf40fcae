"""MASS (Song et al. 2019) on the embedded corpus (CPU): mask one contiguous fragment
of 50% of each segment's tokens; the decoder predicts only that fragment.

  python train.py --config configs/cpu/mass.py --workdir /tmp/mass
  python -m tools.show --config configs/cpu/mass.py --workdir /tmp/mass

Hardware: any laptop CPU, no network. The 'mass-base' preset at a tiny width
(2 + 2 layers, 128 wide). Expected: not yet measured on this corpus; the
training test tests/training/test_denoising_trains.py shows the loss falling.
"""

from configs import quickstart


def get_config():
  c = quickstart.get_config()  # Embedded corpus, 500 steps of 32 x 128, lr 1e-3.
  c.model.preset = 'mass-base'
  c.model.num_layers, c.model.num_decoder_layers = 2, 2
  c.model.d_model, c.model.num_heads, c.model.mlp_dim = 128, 2, 512
  c.objective.module = 'objectives.mass'
  return c
