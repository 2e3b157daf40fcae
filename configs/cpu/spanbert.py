"""SpanBERT's span masking (Joshi et al. 2020) at quickstart scale on the embedded corpus (CPU).

  python train.py --config configs/cpu/spanbert.py --workdir /tmp/spanbert
  python -m tools.show --config configs/cpu/spanbert.py

Hardware: any laptop CPU, no network. The masking is SpanBERT's (section 3.1):
whole-word spans of Geo(0.2) words truncated to at most 10 (mean 3.8), 15% of
the tokens, 80/10/10 per span (objectives/span_masking.py). The paper's model
is BERT-large trained 2.4M steps of 256 x 512 tokens with the span boundary
objective and no NSP (its Table 1 / 2); this config trains the MLM loss alone
on the span masks with the tiny quickstart model. Expected figures: not yet
measured.
"""

from configs import quickstart


def get_config():
  c = quickstart.get_config()
  c.objective.module = 'objectives.span_masking'
  return c
