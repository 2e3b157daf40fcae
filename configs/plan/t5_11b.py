"""T5-11B (Raffel et al. 2020) pretrained with span corruption on C4, planned for a v5p-128.

  python -m training.plan --config configs/plan/t5_11b.py --topology v5p-128
  python train.py --config configs/plan/t5_11b.py --workdir gs://BUCKET/t5_11b \\
    --config.data.tfds_data_dir=gs://BUCKET/tfds --config.data.tokenizer_path=spm.model

Hardware: a TPU v5p-128 (64 chips of 95 GB HBM, 16 hosts): the mesh is fsdp=16 x
tensor=4, strategy fsdp_tp (parameters sharded over fsdp; T5-11B's 128 heads and
65,536-wide MLP split 4 ways, Megatron style, as Mesh TensorFlow split them), bfloat16
compute over float32 parameters, scanned layers with full rematerialization. Data: TFDS
`c4/en` as array_record; tokenizer: a 32k SentencePiece model (`python -m
tools.train_tokenizer --config configs/plan/t5_11b.py --output spm`).

Recipe: T5's pre-training of its released models (section 3.7): 1M steps of 2048 rows of
512 encoder tokens, span corruption with noise density 0.15 and mean span 3 (the decoder
is sized for the worst packed row, 432 tokens: objectives/span_corruption.py), dropout
0.1 (T5 v1.0 pre-trained with it; v1.1 turned it off). One deviation: AdamW (lr 1e-3,
10k warm-up, cosine) instead of T5's Adafactor with the inverse square root schedule, so
the plan counts Adam's two moments.

Expected: the plan (`python -m training.plan`, libtpu 0.0.42.1) fits: 44.84 GiB a chip of
the 95.74 GiB the TPU compiler plans with (1.98 GiB of sharded state and batch, 42.75 GiB
of temporaries), 7.20e16 FLOPs a step. T5-11B's fine-tuned scores (Table 14, T5-11B row:
GLUE average 90.3) are the yardstick of a checkpoint from this run; not trained here.
"""

from configs.paper import t5_small


def get_config():
  c = t5_small.get_config()  # T5's recipe, at T5-11B's size and batch.
  c.model.preset = 't5-11b'
  c.model.scan_layers = True  # Pod-scale: scanned layers, full rematerialization.
  c.model.remat = 'full'
  c.total_steps = 1_000_000
  c.batch_size = 2048
  c.mesh.data = 1
  c.mesh.fsdp = 16
  c.mesh.tensor = 4
  c.mesh.strategy = 'fsdp_tp'
  return c
