"""Training FLOPs per token against counts done by hand from the papers' sizes, each
model's output head counted as it runs (a classifier and a tagger have no vocabulary)."""

import flax.linen as nn
import pytest

from models import electra, flops, graph, heads, presets, student
from models.entity_fusion import EntityFusionClassifier
from objectives.mtdnn import MultiTaskClassifier


def test_bert_base_mlm_at_512():
  # 12 layers of attention 4 x 768 x 768 = 2,359,296 and MLP 2 x 768 x 3072 = 4,718,592;
  # MLM transform 768 x 768 = 589,824; vocabulary 768 x 30522 = 23,440,896.
  matmul = 12 * (2_359_296 + 4_718_592) + 589_824 + 23_440_896
  assert matmul == 108_965_376
  scores = 12 * 12 * 512 * 768  # 12 x layers x keys x (heads x head_dim).
  cfg = presets.get_config('bert-base')
  head = flops.vocabulary_macs(cfg, mlm_transform=True)
  assert flops.train_flops_per_token(cfg, 512, head) == 6 * matmul + scores
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
  assert uniform == 6 * (encoder + decoder + cross_kv) + 12 * 18 * enc * 512
  assert got < 0.6 * uniform


def test_factorized_embeddings_count_their_projection():
  cfg = presets.get_config('albert-base')  # E = 128 tables projected to d = 768.
  plain = presets.get_config('albert-base', embed_dim=None)
  factorized = flops.model_flops_per_token(heads.MaskedLM(cfg), cfg, 512)
  full = flops.model_flops_per_token(heads.MaskedLM(plain), plain, 512)
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


# all-MiniLM-L6-v2's shape: 6 layers, d 384, 12 heads of 32, MLP 1536, BERT's vocabulary.
MINILM = presets.get_config('bert-base', num_layers=6, d_model=384, num_heads=12, mlp_dim=1536)
# Per token: 6 x (attention 4 x 384 x 384 = 589,824 + MLP 2 x 384 x 1536 = 1,179,648).
MINILM_STACK = 6 * (589_824 + 1_179_648)
MINILM_SCORES_128 = 12 * 6 * 128 * 384  # 3,538,944.


def test_minilm_classifier_counts_its_pooler_and_classes_once_per_row():
  assert MINILM_STACK == 10_616_832
  # Pooler 384 x 384 and 2 classes, once per row of 128 tokens: 148,224 / 128 = 1,158.
  expected = 6 * (10_616_832 + 1_158) + 3_538_944
  model = heads.SequenceClassifier(MINILM, num_labels=2)
  assert flops.model_flops_per_token(model, MINILM, 128) == expected == 67_246_884
  # The old count projected every token onto the 30,522-piece vocabulary: 2.05x this one.
  vocabulary = 6 * (10_616_832 + 384 * 30_522) + 3_538_944
  assert vocabulary / expected == pytest.approx(2.0457, abs=1e-4)
  # MT-DNN's shared pooler and one classifier per task (2 + 3 + 1 classes) per row.
  tasks = MultiTaskClassifier(MINILM, ('sst2', 'mnli', 'stsb'), (2, 3, 1))
  got = flops.model_flops_per_token(tasks, MINILM, 128)
  assert got == 6 * (10_616_832 + (147_456 + 384 * 6) / 128) + 3_538_944


def test_minilm_tagger_and_span_heads_count_their_outputs_at_every_token():
  # Nine CoNLL tags: 384 x 9 = 3,456 per token.
  tagger = heads.TokenClassifier(MINILM, num_labels=9)
  assert flops.model_flops_per_token(tagger, MINILM, 128) == 6 * 10_620_288 + 3_538_944
  assert 6 * 10_620_288 + 3_538_944 == 67_260_672
  # SQuAD's start and end logits: 384 x 2.
  span = heads.SpanExtractor(MINILM)
  assert flops.model_flops_per_token(span, MINILM, 128) == 6 * (10_616_832 + 768) + 3_538_944
  # NER as MRC's match head (width 128): two 384 x 128 projections per token and a
  # 128-wide match logit for each of the token's 128 (start, end) pairs.
  matcher = heads.SpanMatcher(MINILM)
  head = 768 + 2 * 384 * 128 + 128 * 128
  assert flops.model_flops_per_token(matcher, MINILM, 128) == 6 * (10_616_832 + head) + 3_538_944


def test_pretraining_heads_and_other_models_count_what_they_run():
  cfg = presets.get_config('bert-base')
  stack, scores = 12 * (2_359_296 + 4_718_592), 12 * 12 * 128 * 768
  mlm = 768 * 768 + 768 * 30522
  # BERT's NSP (pooler + 2 logits per row) beside the MLM at 20 of 128 positions.
  nsp = heads.MaskedLM(cfg, aux_heads=('sentence_pair',))
  got = flops.model_flops_per_token(nsp, cfg, 128, predicted_len=20)
  assert got == pytest.approx(6 * (stack + mlm * 20 / 128 + (768 * 768 + 768 * 2) / 128) + scores)
  # SpanBERT's SBO: its MLP (3d -> d -> d) and the tied vocabulary at every position.
  sbo = heads.MaskedLM(cfg, aux_heads=('span_boundary', 'hidden_states'))
  got = flops.model_flops_per_token(sbo, cfg, 128, predicted_len=20)
  sbo_head = 3 * 768 * 768 + 768 * 768 + 768 * 30522
  assert got == pytest.approx(6 * (stack + mlm * 20 / 128 + sbo_head) + scores)
  # The backbone alone (prototypical networks): the pooler once per row.
  backbone = flops.model_flops_per_token(heads.Backbone(cfg), cfg, 128)
  assert backbone == pytest.approx(6 * (stack + 768 * 768 / 128) + scores)
  # A 2-layer GCN over a 128-token row: 768 x 768 and the 128-neighbour sum per token.
  gcn = graph.GraphSequenceClassifier(cfg, num_labels=2, layers=2, kind='gcn')
  got = flops.model_flops_per_token(gcn, cfg, 128)
  assert got == pytest.approx(6 * (stack + 2 * (768 * 768 + 128 * 768) + 768 * 2 / 128) + scores)
  # ERNIE-THU: fusion (2 d^2 + 100 d), one more block and its scores, pooler and classes.
  ernie = EntityFusionClassifier(cfg, num_labels=3)
  head = 2 * 768 * 768 + 100 * 768 + 2_359_296 + 4_718_592 + 2 * 128 * 768
  head += (768 * 768 + 768 * 3) / 128
  assert flops.model_flops_per_token(ernie, cfg, 128) == pytest.approx(6 * (stack + head) + scores)
  # TinyBERT's student: its head and W_e, W_h onto the teacher's 768 over 7 states.
  small = presets.get_config('bert-tiny')  # 2 layers, d 128.
  wrapped = student.WithProjections(heads.SequenceClassifier(small, num_labels=2), 768)
  plain = flops.model_flops_per_token(heads.SequenceClassifier(small, 2), small, 128)
  assert flops.model_flops_per_token(wrapped, small, 128) == plain + 6 * 3 * 128 * 768
  # KEPLER: the MLM rows plus, per row, three headless 32-token description passes
  # (objectives/api.side_passes), spread over the row's 128 tokens.
  kepler = heads.KnowledgeEmbeddingLM(cfg, num_relations=5)
  described = 6 * stack + 6 * 12 * 2 * 32 * 768  # Per description token, scores at 32 keys.
  got = flops.model_flops_per_token(kepler, cfg, 128, predicted_len=20, side_passes=((3, 32),))
  assert got == pytest.approx(6 * (stack + mlm * 20 / 128) + scores + 3 * 32 * described / 128)
  # FOMAML's 3 inner steps: the backbone's row count x (3 + 4/3) (objectives/api.passes_per_row).
  inner = flops.model_flops_per_token(heads.Backbone(cfg), cfg, 128, passes=3 + 4 / 3)
  assert inner == pytest.approx((3 + 4 / 3) * backbone)
  with pytest.raises(TypeError, match='Side and extra passes'):
    electra_model = electra.ElectraPretraining(cfg, electra.generator_config(cfg, 0.25))
    flops.model_flops_per_token(electra_model, cfg, 128, side_passes=((1, 8),))


def test_a_model_without_a_head_count_is_refused():
  class Unknown(nn.Module):
    cfg: object

  with pytest.raises(TypeError, match='Unknown has no head_macs'):
    flops.model_flops_per_token(Unknown(MINILM), MINILM, 128)
