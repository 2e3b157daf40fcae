"""Whole-word masking MLM (BERT wwm release) at quickstart scale on the embedded corpus (CPU).

  python train.py --config configs/cpu/wwm.py --workdir /tmp/wwm
  python -m tools.show --config configs/cpu/wwm.py

Hardware: any laptop CPU. Words come from the SentencePiece pieces ('▁' starts a
word); with a WordPiece vocab.txt, from '##'. For Chinese (Chinese-BERT-wwm) set
objective.word_segmenter='jieba'. Expected figures: not yet measured.
"""

from configs import quickstart


def get_config():
  c = quickstart.get_config()
  c.objective.module = 'objectives.wwm'
  return c
