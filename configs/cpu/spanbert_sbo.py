"""SpanBERT's recipe: span masking + the span boundary objective, no NSP, at
quickstart scale (CPU).

  python train.py --config configs/cpu/spanbert_sbo.py --workdir /tmp/spanbert
  python -m tools.show --config configs/cpu/spanbert_sbo.py --workdir /tmp/spanbert

Hardware: any laptop CPU, no network. Spans of whole words with lengths from
Geo(0.2) clipped at 10 until 15% of the tokens are masked, 80/10/10 per span
(objectives/span_masking.py); SBO predicts each span token from the span's two
boundary tokens and its offset (objectives/span_boundary.py); the two losses are
added with weight 1 and single full-length segments are used, no NSP (Joshi et
al. 2020, sections 3.1-3.3). `loss`/`accuracy` in the log are the MLM part,
`span_boundary/*` the SBO part. bert-tiny widths; for SpanBERT-base set
model.preset='spanbert-base' and seq_len=512. Expected figures: see the README's
objectives table (this repository's own measurements).
"""

from configs.cpu import spanbert


def get_config():
  c = spanbert.get_config()
  c.objective.module = 'objectives.multitask'
  c.objective.parts = 'objectives.span_masking:1.0,objectives.span_boundary:1.0'
  return c
