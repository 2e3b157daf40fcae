"""GPT-2 XL (1.5B, Radford et al. 2019): causal LM on C4, planned for a TPU v5e-64.

  python -m training.plan --config configs/plan/gpt2_xl.py --topology v5e-64
  python train.py --config configs/plan/gpt2_xl.py --workdir gs://BUCKET/gpt2_xl \\
    --config.data.tfds_data_dir=gs://BUCKET/tfds --config.data.tokenizer_path=spm.model

Hardware: a TPU v5e-64 (64 chips of 16 GB HBM, 16 hosts): the mesh is fsdp=64, strategy
fsdp (parameters and Adam moments sharded 64 ways), bfloat16 compute over float32
parameters, scanned layers with full rematerialization. Data: TFDS `c4/en` as
array_record; tokenizer: a 50,257-piece SentencePiece model (`python -m
tools.train_tokenizer --config configs/plan/gpt2_xl.py --output spm`).

Recipe: GPT-2's batch of 512 x 1024 tokens (0.5M tokens a step; the paper, section 2.3),
100k steps (52B tokens: the paper gives no step count), AdamW with GPT-3's settings for
its 1.3B row (Brown et al. 2020, Table 2.1: lr 2e-4, betas 0.9 / 0.95, weight decay 0.1,
clipping 1.0), 2k warm-up steps, cosine decay to 10%, no dropout (nanoGPT's choice for
pretraining; the paper does not say).

Expected: the plan (`python -m training.plan`, libtpu 0.0.42.1) fits: 5.74 GiB a chip of
the 15.75 GiB the TPU compiler plans with (0.37 GiB of sharded state and batch, 5.33 GiB
of temporaries), 5.39e15 FLOPs a step. GPT-2's WebText perplexities are not comparable on
C4; not trained here.
"""

from configs import base


def get_config():
  c = base.get_config()
  c.model.preset = 'gpt2-xl'
  c.model.dtype = 'bfloat16'
  c.model.dropout_rate = 0.0
  c.model.scan_layers = True
  c.model.remat = 'full'
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
  c.optimizer.learning_rate = 2e-4
  c.optimizer.b2 = 0.95
  c.optimizer.eps = 1e-8
  c.optimizer.weight_decay = 0.1
  c.optimizer.warmup_steps = 2_000
  c.optimizer.schedule = 'cosine'
  c.optimizer.end_lr_fraction = 0.1
  c.mesh.data = 1
  c.mesh.fsdp = 64
  c.mesh.strategy = 'fsdp'
  return c
