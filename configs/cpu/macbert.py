"""MacBERT's MLM as correction (Cui et al. 2020) at quickstart scale on the embedded corpus (CPU).

  python train.py --config configs/cpu/macbert.py --workdir /tmp/macbert
  python train.py --config configs/cpu/macbert.py --workdir /tmp/macbert \\
      --config.objective.synonyms_path=synonyms.tsv     # word<TAB>syn1 syn2 ...
  python -m tools.show --config configs/cpu/macbert.py

Recipe: Cui et al. 2020, "Revisiting Pre-trained Models for Chinese Natural
Language Processing", section 3.3 (MLM as correction): whole-word n-grams of 1-4
words (40/30/20/10%), 15% of the words, replaced by similar words 80% of the
time (`mask_token_rate` here means "similar word", no [MASK] is ever shown),
random words 10%, kept 10%. Similar words come from `synonyms_path` or, failing
that, from cosine neighbours in `embeddings_path` (objectives/macbert.py gives
the formats). This config has neither (the embedded corpus is English and no
synonym table ships with the repository), so every similar-word replacement falls
back to a random word, with a warning in the log: set one of them for the real
recipe. For Chinese set objective.word_segmenter='jieba' and a Chinese WordPiece
vocabulary. MacBERT's sentence-order prediction is not part of this objective.

Hardware: any laptop CPU. Expected (measured on the 2-core CPU shared with other
jobs, 500 steps, no similar-word source, so all replacements random): loss 8.22
(steps 1-25), 6.51 (step 100), 6.24 (step 500); held-out loss 6.43, accuracy
0.053 (its own corruption; quickstart MLM: 6.36 / 0.096). About 13 minutes on a
busy machine. These are this repository's own figures, not the paper's.
"""

from configs import quickstart


def get_config():
  c = quickstart.get_config()
  c.objective.module = 'objectives.macbert'
  return c
