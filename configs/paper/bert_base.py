"""BERT-base (Devlin et al. 2019) pretrained with MLM on English Wikipedia.

  python train.py --config configs/paper/bert_base.py --workdir gs://BUCKET/bert_base \\
    --config.data.tfds_data_dir=gs://BUCKET/tfds --config.data.tokenizer_path=vocab.txt

Hardware: a TPU v3-32 / v4-16 or 8x A100-80GB (mesh data=-1, fsdp=1 fits; use
mesh.fsdp for larger batches). Data: TFDS `wikipedia/20230601.en` prepared as
array_record (`tfds build wikipedia/20230601.en --file_format=array_record`);
tokenizer: the original uncased WordPiece `vocab.txt`.

Recipe: the paper's 1M steps at batch 256 x 512 (the paper runs 90% of steps at
128 tokens; here one phase at 512, as RoBERTa does), AdamW lr 1e-4, 10k warmup,
linear decay, weight decay 0.01, dropout 0.1, MLM only, as RoBERTa (BERT's NSP:
--config.objective.module=objectives.multitask
--config.objective.parts=objectives.mlm:1.0,objectives.sentence_order:1.0). Expected: MLM accuracy ~0.70 on held-out Wikipedia, and
GLUE dev scores near the paper's Table 1 (MNLI-m 84.4) after fine-tuning
(Devlin et al. 2019, Table 1, BERT-base row). Not yet reproduced here.
"""

from configs import base


def get_config():
  c = base.get_config()
  c.model.preset = 'bert-base'
  c.objective.module = 'objectives.mlm'
  c.data.source = 'tfds'
  c.data.tfds_name = 'wikipedia/20230601.en'
  c.data.tfds_split = 'train[1%:]'
  c.data.tfds_eval_split = 'train[:1%]'
  c.total_steps = 1_000_000
  c.batch_size = 256
  c.seq_len = 512
  c.log_every_steps = 100
  c.checkpoint_every_steps = 10_000
  c.eval_every_steps = 10_000
  c.eval_steps = 100
  c.optimizer.learning_rate = 1e-4
  c.optimizer.warmup_steps = 10_000
  c.optimizer.weight_decay = 0.01
  c.optimizer.eps = 1e-6
  c.model.dtype = 'bfloat16'
  return c
