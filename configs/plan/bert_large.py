"""BERT-large (340M, Devlin et al. 2019): MLM at 512 tokens, planned for a TPU v5e-16.

  python -m training.plan --config configs/plan/bert_large.py --topology v5e-16
  python train.py --config configs/plan/bert_large.py --workdir gs://BUCKET/bert_large \\
    --config.data.tfds_data_dir=gs://BUCKET/tfds --config.data.tokenizer_path=vocab.txt

Hardware: a TPU v5e-16 (16 chips of 16 GB HBM, 4 hosts): the mesh is fsdp=16, strategy
fsdp (parameters and Adam moments sharded 16 ways, no tensor parallelism), bfloat16
compute over float32 parameters, scanned layers (a TPU compile of minutes, not a quarter
of an hour) with full rematerialization. Data: TFDS `wikipedia/20230601.en` as
array_record; tokenizer: BERT's uncased WordPiece `vocab.txt` (30,522 pieces).

Recipe: the paper's BERT-large at its full length, batch 256 x 512 tokens (the paper runs
90% of its 1M steps at 128 tokens; here one phase at 512, as RoBERTa), Adam lr 1e-4,
10k warm-up steps, linear decay, weight decay 0.01, dropout 0.1, MLM only.

Expected: the plan (`python -m training.plan`, libtpu 0.0.42.1) fits: 2.36 GiB a chip of
the 15.75 GiB the TPU compiler plans with (0.31 GiB of sharded state and batch, 2.01 GiB
of temporaries), 2.63e14 FLOPs a step (the MLM head at the gathered masked positions).
After pretraining, GLUE dev scores near the paper's BERT-large (Table 6, L=24 H=1024
A=16 row: MNLI-m 86.6); not trained here.
"""

from configs.paper import bert_base


def get_config():
  c = bert_base.get_config()  # BERT's recipe, at BERT-large's size.
  c.model.preset = 'bert-large'
  c.model.scan_layers = True  # Pod-scale: scanned layers, full rematerialization.
  c.model.remat = 'full'
  c.data.vocab_size = 30522
  c.mesh.data = 1
  c.mesh.fsdp = 16
  c.mesh.strategy = 'fsdp'
  return c
