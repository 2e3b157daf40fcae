"""Command-line plumbing shared by train.py and eval.py: where logs go, and multi-host start.

The console shows the run's own lines (progress, evaluations, the results table); the
libraries' log records (Orbax's checkpoint steps, JAX's backend probing, ...) go to
`<workdir>/logs/<program>-<host>-<pid>.log` at INFO and above, with the run's own lines,
and reach the console only from `--console_log_level` up (WARNING by default;
`--console_log_level=info` shows everything, as before).
"""

import logging
import os
import socket

import jax
from absl import flags
from absl import logging as absl_logging

DISTRIBUTED = flags.DEFINE_bool(
  'distributed',
  False,
  'Call jax.distributed.initialize() (auto-detects TPU pods, SLURM, ...). Implied by '
  '--coordinator_address.',
)
COORDINATOR = flags.DEFINE_string(
  'coordinator_address', None, 'host:port of process 0, for a manual multi-process start.'
)
NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Processes in a manual start.')
PROCESS_ID = flags.DEFINE_integer('process_id', None, "This process's index in a manual start.")
CONSOLE_LOG_LEVEL = flags.DEFINE_enum(
  'console_log_level',
  'warning',
  ('debug', 'info', 'warning', 'error'),
  'Library log records shown on the console; all of INFO and above go to <workdir>/logs/.',
)


def route_logs(workdir: str, program: str) -> str:
  """Sends log records of INFO and above to a file in `workdir`, and only those of
  `--console_log_level` and above to the console; returns the file's path.

  Call it first, before JAX touches a backend, so that its records go there too. The
  file is opened for appending and flushed per record, so a resumed (or killed) run's
  log reads as one.
  """
  directory = os.path.join(workdir, 'logs')
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, f'{program}-{socket.gethostname()}-{os.getpid()}.log')
  to_file = logging.FileHandler(path)
  to_file.setFormatter(absl_logging.PythonFormatter())
  to_file.setLevel(logging.INFO)
  logging.getLogger().addHandler(to_file)
  console = CONSOLE_LOG_LEVEL.value.upper()
  absl_logging.set_verbosity(min(logging.INFO, logging.getLevelName(console)))
  absl_logging.get_absl_handler().setLevel(console)
  return path


def initialize_distributed():
  """Joins the other processes when asked; CPU runs use gloo collectives."""
  if not (DISTRIBUTED.value or COORDINATOR.value):
    return
  # Only CPU clients read this (no backend may be touched before initialize()).
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(
    coordinator_address=COORDINATOR.value,
    num_processes=NUM_PROCESSES.value,
    process_id=PROCESS_ID.value,
  )
