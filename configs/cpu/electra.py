"""ELECTRA replaced token detection (Clark et al. 2020) with ELECTRA-small's shapes at tiny
width, on the embedded corpus (CPU).

  python train.py --config configs/cpu/electra.py --workdir /tmp/electra_small

Hardware: any laptop CPU, no network (as configs/quickstart.py). The discriminator is
ELECTRA-small's recipe at quickstart width: 2 layers x 128 (head size 64, FFN 4x),
factorized embeddings E = d_model / 2 as ELECTRA-small's 128 for 256; the generator
is a quarter as wide (32 wide, 1 head, FFN 128), same depth, sharing the embeddings.
Masking is ELECTRA's code: 15% of the tokens, 85% of those [MASK], the rest kept.
loss = MLM + 50 x RTD.

Expected (measured once, on a 2-core CPU shared with other jobs, 1 device, 15 min):
training loss (MLM + 50 x RTD) 39.4 over the first 25 steps, 26.5 at step 500;
held-out at step 500: MLM loss 6.42 (accuracy 0.066), RTD loss 0.408, RTD accuracy
0.857 with 14.3% of the tokens replaced: at this size and length the discriminator
barely beats answering "original" everywhere (held-out AUC of its logits 0.525).
These are this repository's figures, not a paper's.

The paper's figures for the full model (12 layers x 256, 1M steps of batch 128 at
seq_len 128) are Table 1: ELECTRA-Small, 14M parameters, GLUE dev 79.9; the
pre-training hyperparameters (generator 1/4 of the discriminator, rtd_weight 50,
learning rate 5e-4, 10k warmup steps) are in the paper's appendix A, and in
configs/paper/electra_small.py.
"""

from configs import quickstart


def get_config():
  c = quickstart.get_config()
  c.model.preset = 'electra-small'
  c.model.num_layers, c.model.d_model, c.model.num_heads = 2, 128, 2
  c.model.mlp_dim, c.model.embed_dim = 512, 64
  c.objective.module = 'objectives.electra'
  c.objective.mask_token_rate = 0.85  # ELECTRA's code: [MASK] or kept, never random.
  c.objective.random_token_rate = 0.0
  return c
