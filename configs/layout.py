"""LayoutLM (Xu et al. 2020) pretraining: masked language modelling over OCR'd pages, each
token with its word's box as 2-D positions (the masked visual-language model: a masked
token keeps its box, so the model reads the page's layout around it).

  python train.py --config configs/layout.py --workdir /tmp/layoutlm \\
    --config.data.text_files='pages/*.jsonl' [--config.init_from=BERT_CKPT]

data.source='ocr_json': one page per line, {"width", "height", "words": [{"text", "box":
[x0, y0, x1, y1]}]} in the page's pixels (data/layout.py documents the format); boxes go to
LayoutLM's 0-1000 grid and ride in the packed rows as 'boxes' [length, 4]. The preset is
BERT-BASE with four 2-D tables of 1024 rows (x for x0 and x1, y for y0 and y1, height,
width: models/transformer.Embed); from a BERT checkpoint (init_from) every table but the
2-D ones loads, as the paper starts from BERT. Recipe: the paper's (512 tokens, batch 80,
learning rate 5e-5); a SentencePiece model is trained on the pages when data.tokenizer_path
is empty.

Hardware: the paper pretrained on 8 V100s. Expected: the paper's figures (FUNSD entity F1
about 0.79 for BASE after 11M IIT-CDIP pages, Table 1) need that corpus and a FUNSD
reader, neither here; not measured. tests/data/test_layout.py trains layoutlm-tiny on
pages the test writes.
"""

from configs import base


def get_config():
  c = base.get_config()
  c.model.preset = 'layoutlm-base'
  c.objective.module = 'objectives.mlm'
  c.data.source = 'ocr_json'
  c.data.vocab_size = 30522
  c.seq_len = 512
  c.batch_size = 80
  c.total_steps = 150000
  c.optimizer.learning_rate = 5e-5
  c.optimizer.warmup_steps = 0
  c.optimizer.warmup_ratio = 0.01
  c.log_every_steps = 100
  c.checkpoint_every_steps = 5000
  c.eval_every_steps = 5000
  return c
