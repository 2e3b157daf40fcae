"""GPT-2 small (124M, Radford et al. 2019) pretrained with causal LM on C4.

  python train.py --config configs/paper/gpt2_small.py --workdir gs://BUCKET/gpt2_small \\
    --config.data.tfds_data_dir=gs://BUCKET/tfds --config.data.tokenizer_path=spm.model

Hardware: 8x A100/H100 or a TPU v4-16 (mesh data=-1; add mesh.fsdp for larger
batches). Data: TFDS `c4/en` prepared as array_record; tokenizer: a SentencePiece
model trained with `python -m tools.train_tokenizer --config configs/paper/gpt2_small.py
--output spm --config.data.vocab_size=50257` (GPT-2's byte-level BPE loader comes
with the model-families issue).

Recipe: batch 512 x 1024 tokens (0.5M tokens/step) for 100k steps (~50B tokens,
nanoGPT's OpenWebText recipe scaled to C4), AdamW lr 6e-4, betas (0.9, 0.95),
weight decay 0.1, 2k warmup, cosine decay to 10%. Expected: validation loss
~3.0-3.3 nats on C4 after ~10B tokens (GPT-2 small is reported at ~3.3 on
OpenWebText by nanoGPT's README; C4 figures differ). Not yet reproduced here.
"""

from configs import base


def get_config():
  c = base.get_config()
  c.model.preset = 'gpt2-small'
  c.objective.module = 'objectives.clm'
  c.data.source = 'tfds'
  c.data.tfds_name = 'c4/en'
  c.data.tfds_split = 'train'
  c.data.tfds_eval_split = 'validation'
  c.data.vocab_size = 50257
  c.total_steps = 100_000
  c.batch_size = 512
  c.seq_len = 1024
  c.log_every_steps = 100
  c.checkpoint_every_steps = 5_000
  c.eval_every_steps = 5_000
  c.eval_steps = 50
  c.optimizer.learning_rate = 6e-4
  c.optimizer.b2 = 0.95
  c.optimizer.eps = 1e-8
  c.optimizer.weight_decay = 0.1
  c.optimizer.warmup_steps = 2_000
  c.optimizer.schedule = 'cosine'
  c.optimizer.end_lr_fraction = 0.1
  c.model.dtype = 'bfloat16'
  c.model.dropout_rate = 0.0
  return c
