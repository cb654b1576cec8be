"""amdarts.loop on a counter: checkpoint schedule, stop and resume, hook state, refusals."""

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from amdarts import checkpoint as checkpoint_lib
from amdarts import loop
from amdarts import metrics as metrics_lib
from amdarts import parallel

MESH = parallel.data_mesh()


def _config(every=2):
  c = ml_collections.ConfigDict()
  c.log_every_steps = 1
  c.checkpoint_every_steps = every
  c.keep_checkpoints = 20
  return c


@jax.jit
def _step(state, batch):
  """Adds batch · (step + 1): the total depends on order and on every batch once."""
  total = state['total'] + batch * (state['step'] + 1)
  return {'step': state['step'] + 1, 'total': total}, {'loss': total}


def _state():
  return {'step': jnp.zeros((), jnp.int32), 'total': jnp.zeros((), jnp.float32)}


def _batches(epochs=2, steps=3):
  # Batch (e, i) = 10e + i + 1: a pure function of its position.
  return loop.Batches.fixed(epochs, steps, lambda e, i: np.float32(10 * e + i + 1))


class _Events(loop.Hook):
  """Records the events it sees and counts finished epochs across restarts."""

  name = 'events'

  def __init__(self):
    self.events, self.epochs_done = [], 0

  def begin_epoch(self, run, state):
    self.events.append(('begin', run.epoch))
    return state

  def before_step(self, run, state, batch):
    self.events.append(('before', run.step))

  def end_epoch(self, run, state):
    self.epochs_done += 1
    self.events.append(('end_epoch', run.epoch))
    return state

  def end(self, run, state):
    self.events.append(('end',))

  def state_dict(self):
    return {'epochs_done': self.epochs_done}

  def load_state_dict(self, state):
    self.epochs_done = state['epochs_done']


def _steps_saved(workdir):
  return sorted(int(d) for d in os.listdir(os.path.join(workdir, 'checkpoints')) if d.isdigit())


def test_events_and_checkpoints_follow_the_schedule(tmp_path):
  hook = _Events()
  result = loop.run(_state(), _step, _batches(), [hook, loop.LogMetrics()], str(tmp_path),
                    config=_config(), mesh=MESH)
  assert result.finished and result.step == 6 and result.epoch == 2
  assert hook.events == [
      ('begin', 0), ('before', 0), ('before', 1), ('before', 2), ('end_epoch', 0),
      ('begin', 1), ('before', 3), ('before', 4), ('before', 5), ('end_epoch', 1), ('end',)]
  # Every 2 steps and at epoch ends (3, 6); step 6 is both and saved once.
  assert _steps_saved(str(tmp_path)) == [2, 3, 4, 6]
  want = sum((10 * e + i + 1) * (3 * e + i + 1) for e in range(2) for i in range(3))
  assert float(result.state['total']) == want
  records = metrics_lib.read_jsonl(str(tmp_path / 'metrics.jsonl'), kind='train')
  assert [r['step'] for r in records] == list(range(1, 7))
  assert [r['epoch'] for r in records] == [0, 0, 0, 1, 1, 1]
  assert os.path.exists(tmp_path / 'config.json')


def test_stop_and_resume_equal_the_uninterrupted_run(tmp_path):
  whole = loop.run(_state(), _step, _batches(), [_Events()], str(tmp_path / 'whole'),
                   config=_config(every=0), mesh=MESH)
  parts = str(tmp_path / 'parts')
  first = _Events()
  stopped = loop.run(_state(), _step, _batches(), [first, loop.LogMetrics()], parts,
                     config=_config(every=0), mesh=MESH, stop_after=4)
  assert not stopped.finished and stopped.step == 4 and first.epochs_done == 1
  ckpt = checkpoint_lib.Checkpointer(parts)
  state, meta = ckpt.restore(_state())
  ckpt.close()
  # Saved at the stop although not on the period; the next batch is (epoch 1, index 1).
  assert int(state['step']) == 4 and (meta['epoch'], meta['index']) == (1, 1)
  # A rerun that is already past stop_after runs nothing.
  again = _Events()
  assert loop.run(_state(), _step, _batches(), [again], parts, config=_config(every=0),
                  mesh=MESH, stop_after=4).step == 4
  assert again.events == []
  second = _Events()
  resumed = loop.run(_state(), _step, _batches(), [second, loop.LogMetrics()], parts,
                     config=_config(every=0), mesh=MESH)
  assert resumed.finished
  # Mid-epoch resume: no begin_epoch for epoch 1, the hook's count carried over.
  assert second.events[:2] == [('before', 4), ('before', 5)]
  assert second.epochs_done == 2
  assert float(resumed.state['total']) == float(whole.state['total'])
  steps = [r['step'] for r in metrics_lib.read_jsonl(os.path.join(parts, 'metrics.jsonl'))]
  assert steps == list(range(1, 7))  # Each step once across the stop and the resume.


def test_resume_cuts_metrics_back_to_the_checkpoint(tmp_path):
  workdir = str(tmp_path)
  loop.run(_state(), _step, _batches(), [loop.LogMetrics()], workdir,
           config=_config(every=0), mesh=MESH, stop_after=2)
  # Records of steps after the checkpoint (a crash after logging, before saving).
  writer = metrics_lib.MetricWriter(workdir, tensorboard=False)
  writer.write(3, {'loss': -1.0})
  writer.close()
  loop.run(_state(), _step, _batches(), [loop.LogMetrics()], workdir,
           config=_config(every=0), mesh=MESH)
  rows = metrics_lib.read_jsonl(os.path.join(workdir, 'metrics.jsonl'), kind='train')
  assert [r['step'] for r in rows] == list(range(1, 7))
  assert all(r['loss'] != -1.0 for r in rows)


def test_another_fingerprint_is_refused(tmp_path):
  kw = dict(config=_config(), mesh=MESH, stop_after=2)
  loop.run(_state(), _step, _batches(), [], str(tmp_path), fingerprint={'genotype': 'a'},
           **kw)
  with pytest.raises(checkpoint_lib.CheckpointError, match='another genotype'):
    loop.run(_state(), _step, _batches(), [], str(tmp_path), fingerprint={'genotype': 'b'},
             **kw)


def test_non_finite_metric_stops_before_its_checkpoint(tmp_path):
  poisoned = loop.Batches.fixed(1, 4, lambda e, i: np.float32(np.nan if i == 2 else 1.0))
  with pytest.raises(FloatingPointError, match='non-finite loss at step 3'):
    loop.run(_state(), _step, poisoned, [loop.LogMetrics()], str(tmp_path),
             config=_config(every=1), mesh=MESH)
  assert _steps_saved(str(tmp_path)) == [1, 2]


def test_epochs_may_differ_in_length_and_start_at_one(tmp_path):
  lengths = {1: 2, 2: 4}
  batches = loop.Batches(range(1, 3), lengths.__getitem__, lambda e, i: np.float32(1.0),
                         total_steps=6)
  hook = _Events()
  result = loop.run(_state(), _step, batches, [hook], str(tmp_path), config=_config(every=0),
                    mesh=MESH)
  assert result.step == 6 and result.epoch == 3
  assert [e for e in hook.events if e[0] == 'end_epoch'] == [('end_epoch', 1), ('end_epoch', 2)]
  assert _steps_saved(str(tmp_path)) == [2, 6]


def test_cached_builds_once_per_arguments():
  calls = []

  def factory(x):
    calls.append(x)
    return object()

  assert loop.cached(factory, 1) is loop.cached(factory, 1)
  assert loop.cached(factory, 2) is not loop.cached(factory, 1)
  assert calls == [1, 2]
