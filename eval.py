"""Evaluate a run, or gather many runs into a paper-style table.

  python eval.py --config configs/quickstart.py --workdir /tmp/quickstart
  python eval.py --config configs/glue.py:sst2 --workdir /tmp/sst2 --config.init_from=CKPT
  python eval.py --table glue --runs '/tmp/glue/*/seed*' [--out /tmp/glue_table]
  python eval.py --config configs/probe.py:pos,ner --workdir /tmp/probe --config.init_from=CKPT

With --config, prints a table and writes <workdir>/eval.json: for pretraining
objectives the held-out loss, accuracy and perplexity of the newest checkpoint;
for a fine-tuning task the task's official metrics of the best checkpoint on its
dev split(s) (evaluation/checkpoint_eval.py). With --table, reads the eval.json of every
run directory matching --runs and prints per task the median and mean over seeds,
the benchmark average and the published reference (evaluation/results_table.py);
--out also writes <out>.md and <out>.json. A probing config (`probe.tasks` set,
configs/probe.py) trains per-layer probes on the frozen `init_from` checkpoint instead
(evaluation/probing.py) and writes eval.json, probes.md and probes.png.
"""

from absl import app, flags
from ml_collections import config_flags

from evaluation import checkpoint_eval, probing, results_table
from training import launch

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory holding checkpoints/.')
_TABLE = flags.DEFINE_string('table', None, "Gather runs into a table: 'glue', 'squad', 'conll'.")
_RUNS = flags.DEFINE_string('runs', None, "With --table: glob of run directories ('**' allowed).")
_OUT = flags.DEFINE_string('out', None, 'With --table: also write <out>.md and <out>.json.')


def main(argv):
  del argv
  if _TABLE.value:
    if not _RUNS.value:
      raise app.UsageError('--table needs --runs, a glob of run directories.')
    results_table.main(_TABLE.value, _RUNS.value, _OUT.value)
    return
  if _CONFIG.value is None or not _WORKDIR.value:
    raise app.UsageError('Pass --config and --workdir (or --table and --runs).')
  launch.route_logs(_WORKDIR.value, 'eval')
  launch.initialize_distributed()
  if _CONFIG.value.probe.tasks:
    probing.run(_CONFIG.value, _WORKDIR.value)
    return
  checkpoint_eval.evaluate_checkpoint(_CONFIG.value, _WORKDIR.value)


if __name__ == '__main__':
  app.run(main)
