"""Training FLOPs per token against counts done by hand from the papers' sizes."""

import pytest

from models import flops, heads, presets


def test_bert_base_mlm_at_512():
  # 12 layers of attention 4 x 768 x 768 = 2,359,296 and MLP 2 x 768 x 3072 = 4,718,592;
  # MLM transform 768 x 768 = 589,824; vocabulary 768 x 30522 = 23,440,896.
  matmul = 12 * (2_359_296 + 4_718_592) + 589_824 + 23_440_896
  assert matmul == 108_965_376
  scores = 12 * 12 * 512 * 768  # 12 x layers x keys x (heads x head_dim).
  cfg = presets.get_config('bert-base')
  assert flops.train_flops_per_token(cfg, 512, mlm_head=True) == 6 * matmul + scores
  assert 6 * matmul + scores == 710_415_360
  model = heads.MaskedLM(cfg)
  assert flops.model_flops_per_token(model, cfg, 512) == 710_415_360


def test_gpt2_small_at_1024():
  # As BERT-base's stack, no MLM transform, the tied output onto 50257 pieces: 38,597,376.
  matmul = 12 * (2_359_296 + 4_718_592) + 768 * 50257
  scores = 12 * 12 * 1024 * 768  # Causal attention is not halved (the full matrix is computed).
  cfg = presets.get_config('gpt2-small')
  got = flops.model_flops_per_token(heads.CausalLM(cfg), cfg, 1024)
  assert got == 6 * matmul + scores == 854_438_400
  # nanoGPT's 6N + 12 L H Q T with N = 123.65M (biases and norms included): within 0.1%.
  assert abs(got - (6 * 123_653_376 + scores)) / got < 1e-3


def test_t5_small_counts_its_decoder_at_its_own_length():
  cfg = presets.get_config('t5-small')  # 6 + 6 layers, d 512, 8 x 64 heads, MLP 2048, tied.
  enc, dec = 512, 114  # T5's span corruption: 512 inputs, 114 targets.
  r = dec / enc
  attention, mlp = 4 * 512 * 512, 2 * 512 * 2048  # 1,048,576 and 2,097,152.
  encoder = 6 * (attention + mlp)  # Per encoder token.
  # Per decoder token: self-attention (4 d^2), cross-attention queries and outputs (2 d^2),
  # the MLP, the output projection 512 x 32128; per encoder token: cross keys and values.
  decoder = 6 * (6 * 512 * 512 + mlp) + 512 * 32128
  cross_kv = 6 * 2 * 512 * 512
  scores = 12 * 6 * enc * 512 + r * 12 * 6 * (dec + enc) * 512
  expected = 6 * (encoder + r * decoder + cross_kv) + scores
  model = heads.Seq2SeqLM(cfg)
  got = flops.model_flops_per_token(model, cfg, enc, decoder_len=dec)
  assert got == pytest.approx(expected, rel=1e-12)
  assert got == pytest.approx(150_994_944 + r * (230_817_792 + 23_076_864), rel=1e-12)
  # A decoder as long as the encoder (BART's denoising) costs more: the old, uniform count.
  uniform = flops.model_flops_per_token(model, cfg, enc)
  assert uniform == 6 * flops.matmul_params(cfg, mlm_head=False) + 12 * 18 * enc * 512
  assert got < 0.6 * uniform


def test_factorized_embeddings_count_their_projection():
  cfg = presets.get_config('albert-base')  # E = 128 tables projected to d = 768.
  plain = presets.get_config('albert-base', embed_dim=None)
  factorized = flops.train_flops_per_token(cfg, 512, mlm_head=True)
  full = flops.train_flops_per_token(plain, 512, mlm_head=True)
  # Factorized: + 128 x 768 projection, MLM transform 768 x 128 and vocabulary 128 x 30000
  # instead of 768 x 768 and 768 x 30000.
  assert factorized - full == 6 * (128 * 768 + 768 * 128 + 128 * 30000 - 768 * 768 - 768 * 30000)


def test_gathered_masked_positions_count_only_their_head():
  """BERT-base at 512 with 80 gathered positions (BERT's max_predictions_per_seq): the
  MLM transform and the vocabulary projection run on 80 of 512 tokens."""
  cfg = presets.get_config('bert-base')
  head = 768 * 768 + 768 * 30522  # MLM transform + tied output projection.
  full = flops.model_flops_per_token(heads.MaskedLM(cfg), cfg, 512)
  gathered = flops.model_flops_per_token(heads.MaskedLM(cfg), cfg, 512, predicted_len=80)
  assert full - gathered == pytest.approx(6 * head * (1 - 80 / 512))
