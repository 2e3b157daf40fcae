"""GPT-3 175B (Brown et al. 2020) pretrained with causal LM on C4, planned for a v5p-1024.

  python -m training.plan --config configs/plan/gpt3_175b.py --topology v5p-1024
  python train.py --config configs/plan/gpt3_175b.py --workdir gs://BUCKET/gpt3_175b \\
    --config.data.tfds_data_dir=gs://BUCKET/tfds --config.data.tokenizer_path=spm.model

Hardware: a TPU v5p-1024 (512 chips of 95 GB HBM, 128 hosts): the mesh is fsdp=64 x
tensor=8, strategy fsdp_tp (parameters and Adam moments sharded 512 ways; the 96 heads,
the 49,152-wide MLP and the vocabulary split 8 ways), bfloat16 compute over float32
parameters, the 96 layers scanned with full rematerialization, and the batch accumulated
over 4 microbatches of 384 rows. Data: TFDS `c4/en` as array_record (GPT-3's own mix of
Common Crawl, WebText2, books and Wikipedia is not in TFDS); tokenizer: a 50,304-piece
SentencePiece model (`python -m tools.train_tokenizer --config configs/plan/gpt3_175b.py
--output spm`): GPT-2's 50,257 rounded up to a multiple of 128, as Megatron-LM pads it, so
that the vocabulary splits over the 8 tensor devices.

Recipe: the paper's Table 2.1, GPT-3 175B row: 96 layers, d_model 12288, 96 heads of
128, context 2048, batch 3.2M tokens (1536 rows of 2048), Adam lr 0.6e-4 with betas 0.9 /
0.95, eps 1e-8, weight decay 0.1, clipping 1.0 (Appendix B), 375M tokens of warm-up (119
steps), cosine decay to 10%, 300B tokens (95,367 steps). Deviations: the cosine runs over
the whole 300B tokens (the paper's over 260B, then flat), and no batch-size ramp.

Expected: the plan (`python -m training.plan`, libtpu 0.0.42.1) fits: 45.81 GiB a chip of
the 95.74 GiB the TPU compiler plans with (3.83 GiB of sharded state and batch, 41.94 GiB
of temporaries), 3.39e18 FLOPs a step (14.4 s at the chips' bf16 peak). With fewer
microbatches: 1 is refused by the TPU compiler (129.46 GiB of temporaries), 2 takes
81.37 GiB (85%, little headroom); 8 would take 28.11 GiB. No loss is expected yet: not
trained here.
"""

from configs.paper import gpt2_small


def get_config():
  c = gpt2_small.get_config()  # GPT-2's data and optimizer shape, GPT-3's sizes and run.
  c.model.preset = 'gpt3-175b'
  c.model.dropout_rate = None  # The preset's (GPT-2 small's recipe turns it off).
  c.model.scan_layers = True  # Pod-scale: scanned layers, full rematerialization.
  c.model.remat = 'full'
  c.data.vocab_size = 50304  # GPT-2's 50,257 padded to a multiple of 128 (as Megatron-LM).
  c.total_steps = 95_367
  c.batch_size = 1536
  c.seq_len = 2048
  c.num_microbatches = 4
  c.log_every_steps = 10
  c.checkpoint_every_steps = 1_000
  c.eval_every_steps = 1_000
  c.eval_steps = 20
  c.optimizer.learning_rate = 0.6e-4
  c.optimizer.warmup_steps = 119
  c.mesh.data = 1
  c.mesh.fsdp = 64
  c.mesh.tensor = 8
  c.mesh.strategy = 'fsdp_tp'
  return c
