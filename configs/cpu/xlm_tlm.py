"""XLM's translation language modelling (TLM) on a tab-separated parallel corpus (CPU).

  python train.py --config configs/cpu/xlm_tlm.py --workdir /tmp/xlm_tlm \
      --config.data.text_files=/path/to/pairs.tsv
  python -m tools.show --config configs/cpu/xlm_tlm.py --config.data.text_files=/path/to/pairs.tsv

Hardware: any laptop CPU. Each line of the corpus is `source<TAB>target`
(blank lines may separate documents); pairs are packed up to 8 to a row, each
read as [CLS] source [SEP] target [SEP] with language embeddings and positions
restarting at the target, and 15% of the tokens of both sides are masked
80/10/10 (Conneau & Lample 2019, section 3.3 and Figure 2). The SentencePiece
model is trained on the corpus's lines (both columns). XLM alternates TLM with
MLM on monolingual text; this config trains TLM alone. bert-tiny widths.
No parallel corpus ships with this repository or ../shared/data; the tests
train it on a fixture they write. Expected figures: not yet measured on real data.
"""

from configs import quickstart


def get_config():
  c = quickstart.get_config()
  c.objective.module = 'objectives.tlm'
  c.data.source = 'text'
  c.data.text_files = ''  # Required: globs of tab-separated parallel files.
  return c
