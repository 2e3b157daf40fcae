"""Command-line plumbing shared by train.py, eval.py and bench/: flags and multi-host start."""

import jax
from absl import flags

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
