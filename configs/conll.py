"""CoNLL-2003 NER fine-tuning of BERT-base, BERT's recipe (Devlin et al. 2019, section 5.3).

  python train.py --config configs/conll.py --workdir /tmp/conll \\
      --config.data.tokenizer_path=/models/bert-base-cased/vocab.txt \\
      --config.init_from=/models/bert-base-cased
  python eval.py --config configs/conll.py --workdir /tmp/conll

Data: `data.conll_dir` holds train.txt (14,041 sentences, fine-tuned on) and valid.txt
(3,250, evaluated on; BERT's "Dev"), the 4-column CoNLL-2003 files with IOB2 tags
(../shared/data/conll2003 is such a copy). objectives/tagging.py: one row per sentence,
[CLS] sub-tokens [SEP] cut to seq_len, the tag on each word's first sub-token, entity-level
F1 as conlleval computes it. The tokenizer must be the pretrained model's (BERT used its
cased WordPiece vocabulary for NER); a SentencePiece model cannot be trained on these records.

Recipe (the paper's fine-tuning grid, appendix A.3: batch 16/32, lr 5e-5/3e-5/2e-5, 2-4
epochs; Adam, 10% warmup, linear decay, dropout 0.1): batch 32, lr 5e-5, 3 epochs
(`num_epochs`: 3 x 439 = 1317 steps on CoNLL-2003's 14,041 sentences), 10% warmup
(`warmup_ratio`), seq_len 128, evaluation and a checkpoint after every epoch. Hardware: one accelerator (a few minutes on a current GPU); a CPU works but slowly.

Reference: BERT-BASE fine-tuned, CoNLL-2003 Dev F1 96.4 (Test 92.4), the mean of 5 restarts
(Devlin et al. 2019, the NER table: Table 7 in the NAACL version, Table 3 in arXiv v1; we are
confident of the figure, less of the table number). The paper fed "the maximal document
context provided by the data", whereas these rows are single sentences, so expect somewhat
lower (sentence-level reproductions usually report about 95 Dev F1). Expected result of this
config: not yet measured.

configs/conll.py:mrc is NER as machine reading comprehension (Li et al. 2020,
objectives/mrc_ner.py) on the same data, encoder and recipe: each sentence asked one query per
entity type, start and end heads on the tokens, decoded to the same IOB2 tags and F1.

MSRA Chinese NER (configs/conll.py:msra tagging, configs/conll.py:msra,mrc NER as MRC):

  python train.py --config configs/conll.py:msra --workdir /tmp/msra \\
      --config.init_from=/models/bert-base-chinese \\
      --config.data.clue_dir=../shared/data/zh/ChineseNlpCorpus
  python eval.py --config configs/conll.py:msra --workdir /tmp/msra --config.data.eval_split=test

data.source='msra' reads data.clue_dir/dh_msra.zip (data/msra.py): each character a word,
tags O and B-/I- PER, ORG, LOC; splits by sentence index: 'test' the SIGHAN 2006 bakeoff's
test part (4,631 sentences), 'valid' every 10th of its train part (5,066), 'train' the rest
(45,592: 3 x 1,425 steps). Tokenizer as configs/clue.py: the Chinese checkpoint's (BERT's
WordPiece gives each character its own piece; a SentencePiece model, data.tokenizer_path,
also sees one character per word, but may spend two pieces on it: check seq_len). The MRC
variant asks objectives/mrc_ner.MSRA_QUERIES. Same recipe and hardware as above. Expected:
not yet measured; no reference is set (the valid split is ours). For the test part, Li et
al. 2020 report BERT-MRC F1 95.75 (their Chinese flat NER table as we recall it; not
checked against the paper here).
"""

from configs import base
from data import msra
from objectives import mrc_ner

_VARIANTS = ('', 'mrc', 'msra', 'msra,mrc')


def get_config(variant: str = ''):
  parts = {part.strip() for part in variant.split(',') if part.strip()}
  if not parts <= {'mrc', 'msra'}:
    raise ValueError(f'configs/conll.py:{variant}: the variant is one of {_VARIANTS}.')
  c = base.get_config()
  c.model.preset = 'bert-base'
  c.model.dropout_rate = 0.1
  c.objective.module = 'objectives.tagging'
  # The tags in classifier-output order (objectives/tagging.py); CoNLL-2003's nine, IOB2.
  c.objective.labels = 'O,B-PER,I-PER,B-ORG,I-ORG,B-LOC,I-LOC,B-MISC,I-MISC'
  c.objective.task = 'conll2003'  # eval.json's task.
  c.data.source = 'conll'
  c.data.conll_dir = '../shared/data/conll2003'  # train.txt, valid.txt (test.txt).
  c.seq_len = 128
  c.batch_size = 32
  c.total_steps = 0  # Sized from the training sentences read: 3 x 439 for CoNLL-2003.
  c.num_epochs = 3
  c.evals_per_epoch = 1
  c.eval_every_steps = 0  # evals_per_epoch decides.
  c.checkpoint_every_steps = 0  # With every evaluation.
  c.log_every_steps = 50
  c.optimizer.learning_rate = 5e-5
  c.optimizer.warmup_steps = 0
  c.optimizer.warmup_ratio = 0.1
  c.optimizer.schedule = 'linear'
  c.optimizer.weight_decay = 0.01
  c.benchmark = 'conll'
  # Percentages as the paper prints them (eval.json's `reference`).
  c.reference.scores = {'conll_f1': 96.4}
  c.reference.source = (
    'Devlin et al. 2019 (BERT), CoNLL-2003 NER table (Table 7; arXiv v1 Table 3), '
    'BERT-BASE, Dev F1, fine-tuning with document context'
  )
  if 'msra' in parts:  # MSRA Chinese NER: a character per word, the zip in data.clue_dir.
    c.objective.labels = ','.join(msra.TAGS)  # O, B-/I- PER, ORG, LOC.
    c.objective.task = 'msra'
    c.data.source = 'msra'
    c.data.conll_dir = ''
    c.data.clue_dir = '../shared/data/zh/ChineseNlpCorpus'  # Holds dh_msra.zip.
    c.benchmark = 'msra'
    c.reference.scores, c.reference.source = {}, ''
  if 'mrc' in parts:  # NER as MRC: a query per entity type, start / end heads.
    c.objective.module = 'objectives.mrc_ner'
    c.reference.scores, c.reference.source = {}, ''
    if 'msra' in parts:  # Chinese descriptions of MSRA's types.
      c.objective.mrc_queries = ';'.join(f'{k}={q}' for k, q in mrc_ner.MSRA_QUERIES.items())
  return c
