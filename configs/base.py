"""Every default of plm-flax, each with a one-line comment.

An experiment file starts from `get_config()` and overrides a few keys; the
config is locked, so a mistyped key (on the command line or in a file) is an
error that names it, and an experiment file cannot add keys either.

The `objective` section holds the keys every objective shares (`module`, `task`)
and the union of the objectives' own sections: each module of objectives/ that
declares its keys does so in `config()`, with their defaults and comments
(objectives/mlm.py: mask_rate, ...), and they are merged here. A key belongs to
one objective: two declaring the same key is an error, so no key has two
defaults; objectives that reuse another's key (whole-word masking reads MLM's
mask_rate) say so in their docstrings.
"""

import importlib
import pkgutil

from ml_collections import config_dict

import objectives


def get_config() -> config_dict.ConfigDict:
  c = config_dict.ConfigDict()
  c.seed = 0  # Derives data order, masks (seed, epoch, example) and dropout (seed, step).
  c.prng_impl = 'threefry2x32'  # Dropout's keys and hash seeds (training/state.PRNG_IMPLS).
  c.total_steps = 1000  # Optimizer steps to train for; when set, it wins over num_epochs.
  c.num_epochs = 0.0  # Fine-tuning with total_steps 0: passes over the task's train records
  # (total_steps = ceil(num_epochs x records / batch_size), sized from the records read).
  c.evals_per_epoch = 0.0  # With num_epochs, and eval_every_steps 0: evaluations per epoch.
  c.batch_size = 32  # Global batch size in rows, across all hosts and devices.
  c.num_microbatches = 1  # Gradient accumulation: the batch split in this many microbatches
  # inside the step (one optimizer update on the whole batch's gradient).
  c.seq_len = 128  # Tokens per packed row.
  c.log_every_steps = 50  # Console, TensorBoard and metrics.jsonl cadence.
  c.checkpoint_every_steps = 500  # Orbax checkpoint cadence (the last step is always saved);
  # 0: with every evaluation.
  c.keep_checkpoints = 3  # Newest checkpoints kept in --workdir/checkpoints.
  c.on_save_error = 'stop'  # A background checkpoint save failed: 'stop' the run or 'continue'.
  c.max_bad_steps = 10  # Skipped updates in a row (non-finite, or a loss spike) before the
  # run stops with an error.
  c.loss_spike_zscore = 0.0  # Skip an update whose loss is this many running standard
  # deviations above the running mean (0: off).
  c.allow_schedule_change = False  # Resume with another total_steps (the schedule changes).
  c.eval_every_steps = 500  # Held-out evaluation cadence during training (0: never).
  c.eval_steps = 0  # Batches per evaluation; 0 means the whole held-out split.
  c.init_from = ''  # Fine-tuning: a train.py run dir or a converted checkpoint to start from.
  c.teacher = ''  # Distillation (objectives/distill.py): the frozen teacher, a train.py run
  # dir (its best checkpoint) or a converted checkpoint.
  c.benchmark = ''  # Results tables: the benchmark a run belongs to ('glue'); '' is data.source.
  c.reference = config_dict.ConfigDict()  # A published figure to compare with (eval.json).
  c.reference.scores = config_dict.placeholder(dict)  # {score column: value}, e.g. {'sst2': 93.5}.
  c.reference.source = ''  # Where the figures come from: paper, table, row.
  c.peak_flops_per_device = 0.0  # FLOP/s for MFU; 0 measures a matmul peak on this device.

  c.model = config_dict.ConfigDict()
  c.model.preset = 'bert-tiny'  # A name from models/presets.py.
  c.model.dtype = 'float32'  # Activation/compute dtype: float32 or bfloat16.
  c.model.param_dtype = 'float32'  # Storage dtype of parameters.
  c.model.dropout_rate = config_dict.placeholder(float)  # None keeps the preset's value.
  c.model.num_layers = config_dict.placeholder(int)  # None keeps the preset's value.
  c.model.num_decoder_layers = config_dict.placeholder(int)  # Encoder-decoders' decoder depth.
  c.model.d_model = config_dict.placeholder(int)  # None keeps the preset's value.
  c.model.num_heads = config_dict.placeholder(int)  # None keeps the preset's value.
  c.model.mlp_dim = config_dict.placeholder(int)  # None keeps the preset's value.
  c.model.embed_dim = config_dict.placeholder(int)  # Factorized embedding width E (ALBERT).
  c.model.adapter_dim = config_dict.placeholder(int)  # Houlsby adapters' bottleneck (fine-tuning).
  c.model.lora_rank = config_dict.placeholder(int)  # LoRA's rank (fine-tuning; 0: none).
  c.model.lora_alpha = config_dict.placeholder(float)  # LoRA's scale is alpha / rank (0: 1).
  c.model.lora_targets = config_dict.placeholder(str)  # Comma-separated projections: query,value.
  c.model.prompt_length = config_dict.placeholder(int)  # Soft-prompt vectors (prompt tuning).
  c.model.max_2d_positions = config_dict.placeholder(int)  # LayoutLM's box tables (0: none).
  c.model.prefix_length = config_dict.placeholder(
    int
  )  # Key/value prefixes per layer (P-tuning v2).
  c.model.attention_impl = ''  # '' picks by platform (XLA on CPU); 'xla', 'cudnn' or 'splash'.
  c.model.scan_layers = False  # One nn.scan over the layers (faster compiles, same numerics).
  c.model.remat = 'none'  # Recompute activations in the backward pass: none, full or dots.

  c.objective = objective_section()

  # Quantization-aware training (models/quantization.py): fake quantization with a
  # straight-through estimator in every matmul of the blocks.
  c.quant = config_dict.ConfigDict()
  c.quant.bits = 0  # Bits of the fake-quantized weights and activations (0: off; 8: int8).

  # Magnitude pruning during training (training/pruning.py): masks in the optimizer state.
  c.prune = config_dict.ConfigDict()
  c.prune.sparsity = 0.0  # Final fraction of each pruned matrix's weights set to zero (0: off).
  c.prune.schedule = 'gradual'  # 'gradual' (Zhu & Gupta's cubic ramp) or 'oneshot'.
  c.prune.scope = 'global'  # 'global' (one threshold for all matrices) or 'layer' (each its own).
  c.prune.begin_step = 0  # First step of the ramp (the masks start all ones).
  c.prune.end_step = 0  # Step the final sparsity is reached (0: two thirds of total_steps).
  c.prune.frequency = 10  # Steps between mask updates during the ramp.

  # Curriculum learning: easy train documents first (data/curriculum.py, a loader stage).
  c.curriculum = config_dict.ConfigDict()
  c.curriculum.difficulty = ''  # '' (off), 'length' (tokens), or a file: one score per train
  # document in file order, higher is harder (tools/difficulty.py: a reference model's loss).
  c.curriculum.schedule = 'sqrt'  # Competence: 'sqrt', 'linear' (Platanios 2019), 'baby_steps'.
  c.curriculum.steps = 0  # Steps until every document is admitted (0: half of total_steps).
  c.curriculum.initial = 0.01  # Competence at step 0 (sqrt, linear): the easiest fraction.
  c.curriculum.stages = 4  # baby_steps: buckets, one more admitted every steps / stages.

  # Sequence-length warm-up (Li et al. 2022; data/length_warmup.py): packed pretraining rows
  # cut to a length growing linearly from `start` to seq_len over `steps` steps.
  c.length_warmup = config_dict.ConfigDict()
  c.length_warmup.steps = 0  # Warm-up steps (0: off, every row seq_len tokens).
  c.length_warmup.start = 64  # Row length at step 0.
  c.length_warmup.multiple = 16  # Lengths rounded down to a multiple (fewer compilations).

  # Adversarial training on the token embeddings, inside the train step
  # (training/adversarial.py): the clean loss plus `weight` x the perturbed one.
  c.adversarial = config_dict.ConfigDict()
  c.adversarial.method = ''  # '' (off), 'fgsm', 'pgd', 'freelb' or 'smart'.
  c.adversarial.norm = 'l2'  # The ball: 'l2' (a row's whole perturbation) or 'linf' (each entry).
  c.adversarial.epsilon = 0.1  # Its radius, in embedding units (1.0 stalls MiniLM on SST-2).
  c.adversarial.step_size = 0.03  # PGD's and FreeLB's ascent step.
  c.adversarial.steps = 3  # PGD's and FreeLB's ascent steps.
  c.adversarial.weight = 1.0  # Of the adversarial loss, beside the clean loss's 1.
  c.adversarial.init_std = 0.0  # A random start N(0, init_std^2) for the ascent (0: delta = 0).

  # Per-layer probes of a frozen checkpoint (evaluation/probing.py; eval.py runs them).
  c.probe = config_dict.ConfigDict()
  c.probe.tasks = ''  # Comma-separated 'pos', 'chunk', 'ner', 'sst2' ('': not a probing run).
  c.probe.train_examples = 2000  # Sentences (token tasks) or rows sampled for training (0: all).
  c.probe.eval_examples = 1000  # Sampled from the eval split (CoNLL valid, GLUE dev; 0: all).
  c.probe.steps = 500  # AdamW steps per probe.
  c.probe.train_batch = 512  # Items (words, sentences) per probe step (0: all, full batch).
  c.probe.learning_rate = 1e-2
  c.probe.weight_decay = 1e-4
  c.probe.mlp_dim = 256  # Hidden width of the MLP probe.
  c.probe.control = True  # Hewitt & Liang's control task (token tasks) and selectivity.
  c.probe.batch_size = 64  # Rows per forward pass of the frozen model.
  c.probe.seed = 0  # Samples, probe initialization and control labels.

  c.data = config_dict.ConfigDict()
  c.data.source = 'embedded'  # 'embedded' (pydoc topics, offline), 'tfds', 'text', 'jsonl' or
  # 'ocr_json' (pages with word boxes, data/layout.py);
  # fine-tuning: a task source, 'glue', 'conll', 'msra', 'squad', 'fewclue', ... (data/tasks.py).
  c.data.tfds_name = ''  # TFDS dataset name, e.g. 'wikipedia/20230601.en' or 'c4/en'.
  c.data.tfds_split = 'train'  # TFDS split to train on.
  c.data.tfds_eval_split = 'validation'  # TFDS split to evaluate on.
  c.data.tfds_data_dir = ''  # TFDS data_dir ('' uses TFDS's default).
  c.data.text_key = 'text'  # Field holding the document text in TFDS examples and JSONL lines.
  c.data.text_files = ''  # Comma-separated globs of local text (or JSONL) files to train on.
  c.data.span_fields = ''  # JSONL spans as row arrays, 'entity_starts:entities,...' (ERNIE).
  c.data.eval_text_files = ''  # Globs of held-out text files; '' holds out eval_fraction.
  c.data.eval_fraction = 0.05  # Held-out documents when no eval split or files are given.
  c.data.task = ''  # GLUE task of data.source='glue': cola, sst2, mrpc, stsb, qqp, mnli, ...
  c.data.glue_dir = ''  # GLUE download-script layout (<dir>/SST-2/train.tsv); '' reads TFDS glue/*.
  c.data.conll_dir = ''  # CoNLL-2003 train.txt / valid.txt / test.txt (data.source='conll').
  c.data.squad_file = ''  # SQuAD train JSON ('' reads TFDS data.tfds_name, e.g. 'squad/v1.1').
  c.data.eval_squad_file = ''  # SQuAD dev JSON.
  c.data.clue_dir = ''  # Chinese sources' folder: FewCLUE, ChnSentiCorp, THUCNews, dh_msra.zip.
  c.data.train_split = 'train'  # Chinese task sources: the split to train on.
  c.data.chinese_chars = False  # Split CJK characters apart (BERT's Chinese rule) before a
  # SentencePiece model; BERT's WordPiece already does.
  c.data.eval_split = ''  # Task eval split(s), comma-separated; '' is the task's dev split.
  c.data.train_per_label = 0  # Few-shot: train on this many records of each label (0: all).
  c.data.subset_seed = 0  # Which records train_per_label draws (data/tasks.few_shot).
  c.data.train_records = ''  # A file of train record positions, one per line: train on those
  # only (an active-learning round's labels, data/tasks.read_positions); '' trains on all.
  # Meta-learning (data/episodes.py): a task's records as N-way K-shot episodes.
  c.data.episodes = config_dict.ConfigDict()
  c.data.episodes.ways = 0  # N classes per episode (0: records, not episodes).
  c.data.episodes.shots = 5  # K support records per class.
  c.data.episodes.queries = 5  # Q query records per class.
  c.data.episodes.held_out = ''  # Label values of the eval classes ('6,7,8,9'); train: the rest.
  c.data.episodes.train_count = 10_000  # Train episodes (an epoch).
  c.data.episodes.eval_count = 200  # Eval episodes, the same for every run.
  c.data.episodes.seed = 0  # Which episodes are drawn.
  c.data.num_shards = 0  # Logical data shards; 0 means one per process.
  c.data.on_decode_error = 'strict'  # Invalid UTF-8 in text files: 'strict' (error naming the
  # file and byte offset) or 'replace' (U+FFFD, counted in the log).
  c.data.prefetch = 2  # Batches read ahead and put on the devices by a thread (0: none).
  c.data.tokenizer_path = ''  # SentencePiece .model or WordPiece vocab.txt; '' trains one.
  c.data.vocab_size = 4096  # SentencePiece vocabulary trained when no tokenizer_path is set.
  c.data.tokenizer_train_docs = 100_000  # Documents sampled to train SentencePiece.

  c.optimizer = config_dict.ConfigDict()
  c.optimizer.name = 'adamw'  # adamw, lamb (large batch), adafactor (T5), adam (L2) or sgd.
  c.optimizer.learning_rate = 1e-3  # Peak learning rate.
  c.optimizer.warmup_steps = 100  # Linear warmup from 0 to the peak, in steps.
  c.optimizer.warmup_ratio = 0.0  # Warmup as a fraction of total_steps (warmup_steps then 0).
  c.optimizer.schedule = 'linear'  # Decay after warmup: 'linear', 'cosine', 'rsqrt' (T5) or
  # 'constant'.
  c.optimizer.end_lr_fraction = 0.0  # Final learning rate as a fraction of the peak.
  c.optimizer.b1 = 0.9  # Adam / AdamW / LAMB beta1.
  c.optimizer.b2 = 0.999  # Adam / AdamW / LAMB beta2.
  c.optimizer.eps = 1e-6  # Adam / AdamW / LAMB epsilon.
  c.optimizer.weight_decay = 0.01  # Weight decay, on matrices only (not biases or norms):
  # decoupled for adamw / lamb / adafactor, L2 added to the gradient for adam / sgd.
  c.optimizer.momentum = 0.0  # SGD momentum (0: plain SGD).
  c.optimizer.adafactor_decay_rate = 0.8  # Adafactor: second-moment decay 1 - step^-rate.
  c.optimizer.adafactor_factored = True  # Adafactor: factored second moments of matrices.
  c.optimizer.adafactor_min_dim_to_factor = 128  # Factor only when both sides are this big.
  c.optimizer.adafactor_momentum = 0.0  # Adafactor first moment (0: none, as in T5).
  c.optimizer.adafactor_clipping = 1.0  # Adafactor update clipping (RMS threshold; 0: none).
  c.optimizer.adafactor_parameter_scale = True  # Relative step: lr x RMS(param).
  c.optimizer.clip_norm = 1.0  # Global gradient-norm clipping (0 disables).
  c.optimizer.freeze = ''  # Regexes of parameter paths to freeze, e.g. '^encoder/' (features).
  c.optimizer.train_top_layers = 0  # Train only the top k encoder blocks and the heads (0: all).
  c.optimizer.layer_decay = 1.0  # Layer-wise learning-rate decay (ELECTRA fine-tuning: 0.8).
  c.optimizer.unfreeze_every = 0  # Gradual unfreezing (ULMFiT): one more layer every n steps.
  c.optimizer.recadam_gamma = 0.0  # RecAdam's pull toward the pretrained weights (paper: 5000).
  c.optimizer.recadam_k = 0.5  # RecAdam: steepness of the sigmoid annealing lambda(t).
  c.optimizer.recadam_t0 = 250.0  # RecAdam: step where the task and the recall weigh the same.
  c.optimizer.ewc_lambda = 0.0  # EWC's penalty strength toward init_from, Fisher-weighted (0: off).
  c.optimizer.ewc_fisher = ''  # EWC: the earlier tasks' diagonal Fisher (tools/fisher.py, .npz).

  c.mesh = config_dict.ConfigDict()
  c.mesh.data = -1  # Data-parallel axis size; -1 takes the remaining devices.
  c.mesh.fsdp = 1  # Fully-sharded data-parallel axis size (-1: remaining devices).
  c.mesh.sequence = 1  # Sequence-parallel axis size: rows split over it (needs 'fsdp_tp_sp').
  c.mesh.tensor = 1  # Tensor-parallel axis size (-1: remaining devices).
  c.mesh.strategy = 'fsdp_tp'  # Logical-axis rule set: 'dp', 'fsdp', 'fsdp_tp' or 'fsdp_tp_sp'.
  return c.lock()


def objective_section() -> config_dict.ConfigDict:
  """`config.objective`: the shared keys, then every objective's `config()` section.

  Raises:
    ValueError: two objectives declare the same key (one key, one default).
  """
  c = config_dict.ConfigDict()
  c.module = 'objectives.mlm'  # Module path of the objective (importlib).
  c.task = ''  # A fine-tuning task's name: its metric, score column and eval.json's task.
  owners = {key: 'configs/base.py' for key in c}
  for info in sorted(pkgutil.iter_modules(objectives.__path__), key=lambda m: m.name):
    if info.ispkg:
      continue  # objectives/shared: helpers, not objectives.
    module = importlib.import_module(f'objectives.{info.name}')
    if not hasattr(module, 'config'):
      continue  # An objective without keys of its own (clm), or the contract (api).
    for key, value in module.config().items():
      if key in owners:
        raise ValueError(
          f'objective.{key} is declared by both {owners[key]} and {module.__name__}; a key '
          'belongs to one objective (the other reads it from there).'
        )
      owners[key] = module.__name__
      c[key] = value
  return c
