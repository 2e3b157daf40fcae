"""BART (Lewis et al. 2020) denoising on the embedded corpus (CPU): the paper's best
noising, text infilling (30% of the tokens, Poisson(3) spans) + sentence permutation.

  python train.py --config configs/cpu/bart.py --workdir /tmp/bart
  python -m tools.show --config configs/cpu/bart.py --workdir /tmp/bart

Hardware: any laptop CPU, no network. The 'bart-base' preset (post-LN
encoder-decoder, learned positions offset 2) at a tiny width (2 + 2 layers, 128
wide) so that it runs in minutes (the full recipe is configs/paper/bart_base.py). Other noising ablations of the paper (its Table 1) switch on with
objective.mask_rate (token masking), delete_rate, rotate_document.
Expected (measured on a 2-core CPU shared with other jobs, 1 device, a partial
run stopped at step ~430 by a time limit): loss 8.25 over the first 25 steps
(ln 4096 = 8.32 is chance), 6.27 at step 100, 4.95 at step 200, 4.35 at step
325, 4.18 at step 425 (decoder token accuracy 0.26); about 5.5k tokens/s, so
the 500 steps take about 7 minutes. Held-out figures are not measured yet.
These are this repository's own figures; the paper's (its Table 1, "Text
Infilling + Sentence Shuffling" row) are fine-tuning scores on a large corpus.
"""

from configs import quickstart


def get_config():
  c = quickstart.get_config()  # Embedded corpus, 500 steps of 32 x 128, lr 1e-3.
  c.model.preset = 'bart-base'
  c.model.num_layers, c.model.num_decoder_layers = 2, 2
  c.model.d_model, c.model.num_heads, c.model.mlp_dim = 128, 2, 512
  c.objective.module = 'objectives.denoising'
  c.objective.mask_rate = 0.0  # Token masking off: text infilling does the masking.
  c.objective.infill_rate = 0.3  # Text infilling over 30% of the tokens, Poisson(3) spans.
  c.objective.permute_sentences = True
  return c
