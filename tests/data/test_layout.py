"""LayoutLM's inputs (data/layout.py, models/transformer.Embed's 2-D tables): the OCR-JSON
reader and its errors, each piece taking its word's box, boxes packed alongside their
tokens, the 2-D embeddings by hand, boxes that shift the outputs while packing still
isolates the pages, and a short MLM run whose 2-D tables learn from the boxes."""

import json

import flax.linen as nn
import grain
import jax
import numpy as np
import pytest

from configs import base
from configs import layout as layout_config
from data import layout, packing
from evaluation import during_training
from models import transformer
from models.transformer_config import TransformerConfig
from tests.data.test_knowledge import WordTokenizer
from training import compressed_run
from training import harness as harness_lib
from training import state as state_lib

PAGE = {
  'width': 200,
  'height': 100,
  'words': [
    {'text': 'Invoice', 'box': [10, 5, 60, 15]},
    {'text': ' ', 'box': [0, 0, 0, 0]},  # Blank OCR output: dropped.
    {'text': 'total:', 'box': [10, 80, 50, 90]},
    {'text': '42', 'box': [150, 80, 200, 100]},
  ],
}


def _write(path, pages) -> str:
  path.write_text(''.join(json.dumps(p) + '\n' for p in pages), encoding='utf-8')
  return str(path)


def test_pages_scale_boxes_to_the_grid_and_errors_name_the_line(tmp_path):
  empty = {'width': 10, 'height': 10, 'words': []}
  pages = layout.read_ocr_documents([_write(tmp_path / 'p.jsonl', [PAGE, empty, PAGE])])
  assert len(pages) == 2 and pages[0] == 'Invoice total: 42'
  assert pages[0].words == ['Invoice', 'total:', '42']
  # 1000 * x / 200 and 1000 * y / 100, floored.
  np.testing.assert_array_equal(
    pages[0].boxes, [[50, 50, 300, 150], [50, 800, 250, 900], [750, 800, 1000, 1000]]
  )
  outside = dict(PAGE, words=[{'text': 'x', 'box': [10, 5, 260, 15]}])
  with pytest.raises(ValueError, match=r'bad.jsonl:2: word 0 must be .* inside the 200 x 100'):
    layout.read_ocr_documents([_write(tmp_path / 'bad.jsonl', [PAGE, outside])])
  with pytest.raises(ValueError, match=r'size.jsonl:1: width and height'):
    layout.read_ocr_documents([_write(tmp_path / 'size.jsonl', [dict(PAGE, width=0)])])


def test_pieces_take_their_word_s_box_and_packing_carries_the_boxes(tmp_path):
  class Pieces(WordTokenizer):  # Two pieces per word, to see a box repeated.
    def encode(self, text):
      return np.repeat(super().encode(text), 2)

  tokenizer = Pieces()
  page = layout.read_ocr_documents([_write(tmp_path / 'p.jsonl', [PAGE])])[0]
  ids, boxes = layout.encode_words(tokenizer, page)
  assert len(ids) == 6
  np.testing.assert_array_equal(boxes, np.repeat(page.boxes, 2, axis=0))

  second = np.arange(8, dtype=np.int32).reshape(2, 4) + 1
  docs = [
    {'tokens': ids, 'epoch': 0, 'token_arrays': {'boxes': boxes}},
    {'tokens': np.array([5, 6]), 'epoch': 0, 'token_arrays': {'boxes': second}},
  ]
  docs = grain.MapDataset.source(docs).to_iter_dataset()
  rows = packing.PackedRows(docs, seq_len=16, prefix_id=1, suffix_id=2, shard_index=0,
                            num_shards=1)  # fmt: skip
  row = next(iter(rows))
  # [CLS] 6 pieces [SEP] [CLS] 2 pieces [SEP] padding: framing and padding boxes are 0.
  np.testing.assert_array_equal(row['segment_ids'], [1] * 8 + [2] * 4 + [0] * 4)
  want = np.zeros((16, 4), np.int32)
  want[1:7], want[9:11] = boxes, second
  np.testing.assert_array_equal(row['boxes'], want)


CFG = TransformerConfig(vocab_size=64, num_layers=2, d_model=16, num_heads=2, mlp_dim=32,
                        dropout_rate=0.0, max_len=32, max_2d_positions=1024)  # fmt: skip


def test_2d_embeddings_by_hand():
  cfg = TransformerConfig(**{**CFG.__dict__, 'embed_norm': False})  # The bare sum.
  embed = transformer.Embed(cfg)
  tokens, zeros = np.array([[3, 4]], np.int32), np.zeros((1, 2), np.int32)
  boxes = np.array([[[10, 20, 110, 70], [0, 0, 1000, 1000]]], np.int32)
  params = nn.unbox(embed.init(jax.random.key(0), tokens, zeros, zeros, True, boxes=boxes))
  t = {name: np.asarray(v['embedding']) for name, v in params['params'].items()}
  plain = t['token'][tokens[0]] + t['position'][[0, 0]] + t['token_type'][[0, 0]]
  added = np.stack([
    t['layout_x'][x0] + t['layout_y'][y0] + t['layout_x'][x1] + t['layout_y'][y1]
    + t['layout_h'][y1 - y0] + t['layout_w'][x1 - x0] for x0, y0, x1, y1 in boxes[0]
  ])  # fmt: skip
  got = embed.apply(params, tokens, zeros, zeros, True, boxes=boxes)
  np.testing.assert_allclose(got[0], plain + added, rtol=1e-6, atol=1e-6)
  # No boxes are boxes of zeros; a stack without the tables refuses boxes.
  zero_boxes = embed.apply(params, tokens, zeros, zeros, True, boxes=np.zeros_like(boxes))
  np.testing.assert_array_equal(embed.apply(params, tokens, zeros, zeros, True), zero_boxes)
  bare = transformer.Embed(TransformerConfig(**{**CFG.__dict__, 'max_2d_positions': 0}))
  bare_params = bare.init(jax.random.key(0), tokens, zeros, zeros, True)
  with pytest.raises(ValueError, match='boxes need model.max_2d_positions'):
    bare.apply(bare_params, tokens, zeros, zeros, True, boxes=boxes)


def test_boxes_shift_the_outputs_and_packing_still_isolates_pages():
  model = transformer.Stack(CFG)
  rng = np.random.default_rng(0)
  tokens = rng.integers(3, 64, (1, 10)).astype(np.int32)
  segments = np.array([[1] * 6 + [2] * 3 + [0]], np.int32)
  positions = np.array([[0, 1, 2, 3, 4, 5, 0, 1, 2, 0]], np.int32)
  boxes = rng.integers(0, 1000, (1, 10, 4)).astype(np.int32)
  boxes[..., 2:] = np.maximum(boxes[..., 2:], boxes[..., :2])  # x1 >= x0, y1 >= y0.
  params = nn.unbox(model.init(jax.random.key(0), tokens, segments))
  run = lambda t, s, p, b: np.asarray(model.apply(params, t, s, p, boxes=b))  # noqa: E731
  packed = run(tokens, segments, positions, boxes)
  # Other boxes for the first page: its outputs move, the second page's do not.
  moved = boxes.copy()
  moved[0, :6] = (moved[0, :6] + 7) % 1000
  moved[0, :6, 2:] = np.maximum(moved[0, :6, 2:], moved[0, :6, :2])
  shifted = run(tokens, segments, positions, moved)
  assert np.abs(shifted[0, :6] - packed[0, :6]).min(axis=-1).max() > 1e-4
  np.testing.assert_array_equal(shifted[0, 6:9], packed[0, 6:9])
  # Each page packed equals the page alone.
  for first, end in ((0, 6), (6, 9)):
    alone = run(tokens[:, first:end], np.ones((1, end - first), np.int32),
                positions[:, first:end], boxes[:, first:end])  # fmt: skip
    np.testing.assert_allclose(packed[0, first:end], alone[0], atol=1e-5)


@pytest.mark.slow
def test_mlm_on_pages_trains_the_2d_tables(spm_path, tmp_path):
  rng = np.random.default_rng(0)
  words = 'invoice total date amount due paid name address phone account'.split()
  pages = []
  for _ in range(48):
    n = int(rng.integers(8, 30))
    x0, y0 = rng.integers(0, 500, n), rng.integers(0, 700, n)
    pages.append({
      'width': 612, 'height': 792,
      'words': [{'text': str(rng.choice(words)), 'box': [int(a), int(b), int(a) + 60, int(b) + 12]}
                for a, b in zip(x0, y0, strict=True)],
    })  # fmt: skip
  config = layout_config.get_config()
  config.data.text_files = _write(tmp_path / 'pages.jsonl', pages)
  config.data.tokenizer_path, config.model.preset = spm_path, 'layoutlm-tiny'
  config.seq_len, config.batch_size = 64, 8
  config.total_steps = config.eval_every_steps = config.checkpoint_every_steps = 6
  config.log_every_steps, config.peak_flops_per_device = 3, 1e9
  config.optimizer.learning_rate = 1e-3
  workdir = str(tmp_path / 'run')
  run = harness_lib.Harness(config, workdir)  # The trainer's initial weights (seed 0).
  state, _ = state_lib.create(run.model, run.tx, mesh=run.mesh, rules=run.rules, seed=0,
                              seq_len=config.seq_len)  # fmt: skip
  start = np.asarray(nn.unbox(state.params)['encoder']['embed']['layout_h']['embedding'])
  during_training.train_and_evaluate(config, workdir)
  with open(f'{workdir}/metrics.jsonl') as f:
    logged = [json.loads(line) for line in f]
  assert all(np.isfinite(r['loss']) for r in logged if 'loss' in r)
  assert any('eval/loss' in r for r in logged)
  trained = compressed_run.read_run(workdir, base.get_config()).params['encoder']['embed']
  change = np.abs(np.asarray(trained['layout_h']['embedding']) - start).max(axis=-1)  # [1024]
  # Every word box is 12 of 792 pixels high: 15 or 16 on the grid (framing, padding: 0).
  # Those rows learned; the rows of heights no box has only decayed (weight decay).
  heights = {0} | {int(h) for p in layout.read_ocr_documents([config.data.text_files])
                    for h in p.boxes[:, 3] - p.boxes[:, 1]}  # fmt: skip
  assert heights == {0, 15, 16}
  unused = np.setdiff1d(np.arange(1024), sorted(heights))
  assert min(change[[0, 15, 16]]) > 100 * change[unused].max(), change[:20]
