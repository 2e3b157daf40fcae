"""Per-layer probes of a frozen checkpoint (Tenney et al. 2019; Jawahar et al. 2019; control
tasks and selectivity: Hewitt & Liang 2019): evaluation/probing.py.

  python eval.py --config configs/probe.py:pos,chunk,ner,sst2 --workdir /tmp/probe_minilm \\
      --config.init_from=/tmp/minilm --config.data.conll_dir=../shared/data/conll2003 \\
      --config.data.glue_dir=../shared/data/glue

`get_config(tasks)` takes a comma-separated subset of 'pos', 'chunk', 'ner' (CoNLL-2003's
columns: each word's state at its first sub-token) and 'sst2' (the mean state of a
sentence). `init_from` is a converted checkpoint or a train.py run, read with its own
tokenizer. Each layer (0: the embeddings) gets a linear and an MLP probe, each also on
the control task; eval.json, probes.md (the table) and probes.png (accuracy by layer)
land in --workdir.

Hardware: a CPU. Sizes: 2000 train and 1000 eval sentences per task (`probe.
train_examples`, `probe.eval_examples`), 500 steps of 512 items per probe (four probes
per task: linear, MLP, and both on the control task). Expected (the papers' direction, not a
target): part-of-speech and chunk accuracy peak in the lower-middle layers and stay well
above the control; the sentence task (SST-2) rises towards the top layers.
"""

from configs import base
from evaluation import probing


def get_config(tasks: str = 'pos,chunk,ner,sst2'):
  probing.parse_tasks(tasks)
  c = base.get_config()
  c.probe.tasks = tasks
  c.data.conll_dir = '../shared/data/conll2003'
  c.data.glue_dir = '../shared/data/glue'
  c.seq_len = 128
  return c
