"""Distillation through train.py's loop: a frozen teacher inside the jitted loss.

One tiny teacher is fine-tuned on a GLUE-layout fixture for the whole module; students
are distilled from it with each method. Checked: the teacher's params are bit-identical
after training and absent from the student's train state and checkpoints (the state
holds exactly the student's leaves, its optimizer state exactly AdamW's for them), the
student built from teacher layers starts from them, the recorded teacher fingerprint is
checked on resume, and each method's loss is the sum of its declared terms.
"""

import json
import os
import shutil

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from configs import distill as distill_config
from configs import glue as glue_config
from configs import quickstart
from evaluation import checkpoint_eval, during_training
from models.convert import mapping
from objectives import api
from tests.training.test_finetune import tiny, write_sst2
from training import best_checkpoint, checkpointing, integrity, model_setup, pretrained
from training import harness as harness_lib
from training import teacher as teacher_lib


@pytest.fixture(scope='module')
def teacher_run(spm_path, tmp_path_factory):
  """A 4-layer, 64-wide teacher fine-tuned for 6 steps on the SST-2 fixture."""
  root = tmp_path_factory.mktemp('distill')
  write_sst2(root / 'glue', 48, 16)
  config = tiny(glue_config.get_config('sst2'), spm_path, root / 'glue')
  config.model.num_layers = 4
  config.total_steps = config.eval_every_steps = 6
  workdir = str(root / 'teacher')
  during_training.train_and_evaluate(config, workdir)
  return {'root': root, 'workdir': workdir, 'spm': spm_path}


def student_config(teacher_run, method: str, teacher: str = ''):
  config = distill_config.get_config(f'sst2,{method}')
  config.teacher = teacher or teacher_run['workdir']
  config.data.glue_dir = str(teacher_run['root'] / 'glue')
  config.seq_len, config.batch_size = 32, 8
  config.total_steps = config.eval_every_steps = 3
  config.peak_flops_per_device = 1e9
  config.log_every_steps = 1  # Each logged line one step: its total is exactly its terms'.
  config.objective.distill.student_layers = '1,3'
  return config


def teacher_digest(teacher_run) -> str:
  params, _, _ = pretrained.best_or_latest_params(teacher_run['workdir'])
  return integrity.json_digest(integrity.state_record(params)[0])


@pytest.mark.slow
@pytest.mark.parametrize('method', ['distilbert', 'pkd', 'tinybert', 'minilm'])
def test_distillation_trains_a_student_from_teacher_layers(teacher_run, tmp_path, method):
  before = teacher_digest(teacher_run)
  config = student_config(teacher_run, method)
  if method == 'pkd':  # The teacher sharded over fsdp and tensor, and microbatches.
    config.mesh.data, config.mesh.fsdp, config.mesh.tensor = 2, 2, 2
    config.num_microbatches = 2
  workdir = str(tmp_path / method)
  during_training.train_and_evaluate(config, workdir)
  assert teacher_digest(teacher_run) == before  # The teacher is frozen: not one bit moved.

  # The checkpoint holds the student alone: its 2 layers, and AdamW moments of its leaves.
  checkpointer = checkpointing.Checkpointer(workdir, keep=0, save_every=1, read_only=True)
  state, _, meta = checkpointer.restore_as_saved(checkpointer.latest_step())
  checkpointer.close()
  student = mapping.flatten(jax.tree.map(np.asarray, state['params']))
  teacher, step, kind = pretrained.best_or_latest_params(teacher_run['workdir'])
  teacher = mapping.flatten(teacher)
  blocks = sorted({k.split('/')[1] for k in student if k.startswith('encoder/block_')})
  assert blocks == ['block_0', 'block_1']
  moments = [
    leaf for path, leaf in jax.tree_util.tree_flatten_with_path(state['opt_state'])[0]
    if 'mu' in integrity.leaf_name(path)
  ]  # fmt: skip
  assert sum(m.size for m in moments) == sum(v.size for v in student.values())
  assert (
    meta['teacher']['sha256'] == before
    and meta['teacher']['checkpoint'] == f'{kind} checkpoint, step {step}'
  )
  # The metrics: the student's own loss, the method's terms, their weighted sum.
  lines = [json.loads(x) for x in open(os.path.join(workdir, 'metrics.jsonl'))]
  logged = next(x for x in lines if 'total_loss' in x)
  terms = run_terms(config)
  expected = sum(c * logged[name] for name, c in terms.items())
  assert set(terms) - {'loss'} <= set(logged), (terms, sorted(logged))
  assert abs(logged['total_loss'] - expected) < 1e-3 * max(1.0, abs(expected))
  if method == 'distilbert':  # eval.py's path: the teacher's path comes from config.json.
    evaluated = distill_config.get_config('sst2')
    evaluated.objective.distill.student_layers = '1,3'  # As trained (a model override).
    result = checkpoint_eval.evaluate_checkpoint(evaluated, workdir)
    assert result['checkpoint'] == 'best' and 0.0 <= result['scores']['sst2'] <= 1.0


def run_terms(config) -> dict:
  return api.loss_terms(api.load(config.objective.module, config.objective), config.objective)


def test_resume_is_exact_and_checks_the_teacher(teacher_run, tmp_path):
  """2 + 2 steps with a restart equal 4 uninterrupted steps bit for bit (the teacher is
  reloaded from its path); a resume against another teacher stops with a message."""

  def config(steps, teacher=teacher_run['workdir']):
    c = student_config(teacher_run, 'minilm', teacher=teacher)
    c.total_steps, c.eval_every_steps, c.checkpoint_every_steps = steps, 0, 2
    c.optimizer.schedule, c.optimizer.warmup_ratio = 'constant', 0.0
    return c

  def final_params(workdir):
    checkpointer = checkpointing.Checkpointer(workdir, keep=0, save_every=1, read_only=True)
    state, _, _ = checkpointer.restore_as_saved(checkpointer.latest_step())
    checkpointer.close()
    return mapping.flatten(jax.tree.map(np.asarray, state['params']))

  straight, split = str(tmp_path / 'straight'), str(tmp_path / 'split')
  during_training.train_and_evaluate(config(4), straight)
  during_training.train_and_evaluate(config(2), split)
  during_training.train_and_evaluate(config(4), split)
  a, b = final_params(straight), final_params(split)
  assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)

  # Another teacher: the same run with one weight of its best params changed.
  other = tmp_path / 'other_teacher'
  shutil.copytree(teacher_run['workdir'], other)
  shutil.rmtree(other / 'best')
  params, _, _ = pretrained.best_or_latest_params(str(other))
  params['classifier']['bias'] = params['classifier']['bias'] + 1.0
  best = best_checkpoint.BestCheckpoint(str(other))
  best.update(6, params, 'sst2', {'scores': {'sst2': 1.0}, 'metrics': {}})
  best.close()
  with pytest.raises(integrity.CheckpointMismatchError, match='the teacher changed'):
    during_training.train_and_evaluate(config(6, teacher=str(other)), split)
  assert final_params(split).keys() == a.keys()  # Nothing moved aside or overwritten.


def test_teacher_is_sharded_by_the_students_rules(teacher_run):
  """On a 2 (fsdp) x 2 (tensor) x 2 (data) mesh the teacher's leaves get the shardings
  the rules give their names, as the student's do: a [embed, mlp] kernel split both ways."""
  config = student_config(teacher_run, 'distilbert')
  config.mesh.data, config.mesh.fsdp, config.mesh.tensor = 2, 2, 2
  run = harness_lib.Harness(config, str(teacher_run['root'] / 'unused'))
  teacher = teacher_lib.load(config, run.exp, mesh=run.mesh, rules=run.rules)
  _, student_shardings = run.abstract_state()
  kernel = teacher.params['encoder']['block_0']['mlp']['wi']['kernel']
  assert kernel.sharding == student_shardings.params['encoder']['block_0']['mlp']['wi']['kernel']
  assert kernel.sharding.spec == PartitionSpec('fsdp', 'tensor')
  assert teacher.fingerprint['sha256'] == teacher_digest(teacher_run)
  # The student of layers 1, 3 starts from them (training/resume.py).
  cfg = model_setup.model_config(config, run.exp.tokenizer.vocab_size)
  assert cfg.num_layers == 2 and cfg.d_model == run.exp.teacher_cfg.d_model
  bad = student_config(teacher_run, 'distilbert')
  bad.objective.distill.student_layers = '1,7'
  with pytest.raises(ValueError, match='layers 0..3'):
    model_setup.model_config(bad, run.exp.tokenizer.vocab_size)


@pytest.mark.slow
def test_general_distillation_on_text_with_an_mlm_teacher(spm_path, tmp_path):
  """TinyBERT's general distillation: an MLM teacher (a 2-step quickstart run), a fresh
  64-wide student of another width learning W_e and W_h, on the embedded corpus."""
  teacher = quickstart.get_config()
  teacher.data.tokenizer_path = spm_path
  teacher.total_steps, teacher.eval_every_steps, teacher.seq_len = 2, 0, 32
  teacher.batch_size, teacher.peak_flops_per_device = 8, 1e9
  during_training.train_and_evaluate(teacher, str(tmp_path / 'teacher'))
  config = distill_config.get_config('general')
  config.teacher = str(tmp_path / 'teacher')
  config.model.num_layers, config.model.d_model, config.model.num_heads = 2, 64, 2
  config.model.mlp_dim = 128
  config.total_steps, config.eval_every_steps, config.seq_len = 2, 2, 32
  config.batch_size, config.peak_flops_per_device, config.log_every_steps = 8, 1e9, 1
  config.eval_steps = 1
  logged = during_training.train_and_evaluate(config, str(tmp_path / 'student'))
  assert {'distill/embedding', 'distill/attention', 'distill/hidden'} <= set(logged)
  assert 'distill/soft' not in logged and np.isfinite(logged['total_loss'])
  checkpointer = checkpointing.Checkpointer(str(tmp_path / 'student'), keep=0, save_every=1)
  state, _, _ = checkpointer.restore_as_saved(2)
  checkpointer.close()
  assert state['params']['distill_hidden']['kernel'].shape == (64, 128)  # To the teacher's width.
