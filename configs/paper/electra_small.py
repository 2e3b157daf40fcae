"""ELECTRA-small (14M, Clark et al. 2020) pre-trained with replaced token detection.

  python train.py --config configs/paper/electra_small.py --workdir gs://BUCKET/electra_small \\
    --config.data.tfds_data_dir=gs://BUCKET/tfds --config.data.tokenizer_path=vocab.txt

Hardware: one GPU (the paper trains ELECTRA-Small on one V100 in 4 days) or any larger
mesh. Data: TFDS `wikipedia/20230601.en` prepared as array_record (the paper adds
BooksCorpus, which TFDS does not serve); tokenizer: BERT's uncased WordPiece `vocab.txt`
(../shared/data/vocab/bert-base-uncased).

Recipe (the paper's appendix, Table 6, ELECTRA-Small column): 12 layers x 256, 4 heads,
FFN 1024, embeddings 128 (the 'electra-small' preset), generator 1/4 of the
discriminator's width (`objective.generator_fraction` 0.25), RTD weight 50, 15% of the
tokens masked ([MASK] 85%, kept 15%, as ELECTRA's code), sequences of 128, batch 128,
1M steps, Adam lr 5e-4, eps 1e-6, weight decay 0.01, 10k warm-up steps then linear
decay, dropout 0.1.

Expected: not yet reproduced here. The paper's figure is Table 1, ELECTRA-Small: GLUE
dev score 79.9 after fine-tuning (configs/glue.py from this run). The CPU-sized recipe is
configs/cpu/electra.py.
"""

from configs import base


def get_config():
  c = base.get_config()
  c.model.preset = 'electra-small'
  c.model.dropout_rate = 0.1
  c.objective.module = 'objectives.electra'
  c.objective.mask_token_rate = 0.85  # ELECTRA's code: [MASK] or kept, never random.
  c.objective.random_token_rate = 0.0
  c.data.source = 'tfds'
  c.data.tfds_name = 'wikipedia/20230601.en'
  c.data.tfds_split = 'train[1%:]'
  c.data.tfds_eval_split = 'train[:1%]'
  c.total_steps = 1_000_000
  c.batch_size = 128
  c.seq_len = 128
  c.log_every_steps = 100
  c.checkpoint_every_steps = 10_000
  c.eval_every_steps = 10_000
  c.eval_steps = 100
  c.optimizer.learning_rate = 5e-4
  c.optimizer.warmup_steps = 10_000
  c.optimizer.weight_decay = 0.01
  c.optimizer.eps = 1e-6
  return c
