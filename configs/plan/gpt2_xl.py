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

from configs.paper import gpt2_small


def get_config():
  c = gpt2_small.get_config()  # GPT-2 small's recipe, at GPT-2 XL's size.
  c.model.preset = 'gpt2-xl'
  c.model.scan_layers = True  # Pod-scale: scanned layers, full rematerialization.
  c.model.remat = 'full'
  c.optimizer.learning_rate = 2e-4
  c.mesh.data = 1
  c.mesh.fsdp = 64
  c.mesh.strategy = 'fsdp'
  return c
