"""amdarts.loop on a counter: checkpoint schedule, stop and resume, hook state, refusals."""

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from amdarts import checkpoint as checkpoint_lib
from amdarts import errors
from amdarts import loop
from amdarts import metrics as metrics_lib
from amdarts import parallel
from conftest import logged_warnings

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
  with pytest.raises(FloatingPointError, match='non-finite loss, total at step 3'):
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


# ------------------------------------------------------------------ reliability


@jax.jit
def _quiet_step(state, batch):
  """`_step` whose metric stays finite whatever the state: only the state can diverge."""
  total = state['total'] + batch * (state['step'] + 1)
  return {'step': state['step'] + 1, 'total': total}, {'loss': jnp.float32(1.0)}


def _finite_checkpoint(workdir, step):
  ckpt = checkpoint_lib.Checkpointer(workdir)
  try:
    state, _ = ckpt.restore(_state(), step)
  finally:
    ckpt.close()
  return bool(np.isfinite(state['total']))


def test_a_non_finite_state_is_never_checkpointed(tmp_path):
  # The probe of issue 11: logging rarely, checkpointing every step, keeping 2. The
  # state turns non-finite at step 3 while every metric stays finite.
  workdir = str(tmp_path)
  config = _config(every=1)
  config.log_every_steps, config.keep_checkpoints = 1000, 2
  config.lr = 1e10
  poisoned = loop.Batches.fixed(1, 6, lambda e, i: np.float32(np.inf if i == 2 else 1.0))
  with pytest.raises(errors.NonFiniteError) as info:
    loop.run(_state(), _quiet_step, poisoned, [loop.LogMetrics()], workdir, config=config,
             mesh=MESH, blame=lambda parts: 'lr')
  message = str(info.value)
  assert message.startswith('non-finite total at step 3, not checkpointed')
  assert 'the checkpoint of step 2 is kept' in message and 'lr=1e+10' in message
  assert '\n' not in message
  # The last good checkpoints stay: a bad save neither happened nor pruned them.
  assert _steps_saved(workdir) == [1, 2]
  assert _finite_checkpoint(workdir, 2) and _finite_checkpoint(workdir, 1)
  # A restart resumes the good state (here with data that no longer diverge).
  clean = loop.Batches.fixed(1, 6, lambda e, i: np.float32(1.0))
  result = loop.run(_state(), _quiet_step, clean, [], workdir, config=config, mesh=MESH)
  assert float(result.state['total']) == sum(range(1, 7))


def test_a_divergence_between_sync_points_is_found_one_step_later(tmp_path):
  config = _config(every=0)
  config.log_every_steps = 1000
  poisoned = loop.Batches.fixed(1, 6, lambda e, i: np.float32(np.nan if i == 1 else 1.0))
  seen = []

  class Record(loop.Hook):
    def after_step(self, run, state, metrics):
      seen.append(run.step)

  with pytest.raises(FloatingPointError, match='non-finite total at step 2, not '
                     r'checkpointed \(no checkpoint was written\); lower the'):
    loop.run(_state(), _quiet_step, poisoned, [Record()], str(tmp_path), config=config,
             mesh=MESH)
  assert seen == [1, 2]  # Found while step 3 ran, before its hooks.
  assert _steps_saved(str(tmp_path)) == []


def test_another_config_is_refused_before_anything_is_written(tmp_path):
  workdir = str(tmp_path)
  config = _config()
  config.seed, config.lr = 0, 0.1
  loop.run(_state(), _step, _batches(), [loop.LogMetrics()], workdir, config=config,
           mesh=MESH, stop_after=2)
  before = {name: (tmp_path / name).read_bytes() for name in ('config.json', 'metrics.jsonl')}
  other = _config()
  other.seed, other.lr = 1, 0.2
  with pytest.raises(checkpoint_lib.CheckpointError) as info:
    loop.run(_state(), _step, _batches(), [loop.LogMetrics()], workdir, config=other,
             mesh=MESH)
  assert 'another config (lr 0.1 → 0.2, seed 0 → 1)' in str(info.value)
  assert '\n' not in str(info.value)
  assert {name: (tmp_path / name).read_bytes() for name in before} == before
  assert _steps_saved(workdir) == [2]
  # Fields a resumed run may change (config_fields.RESUMABLE) are no mismatch.
  config.log_every_steps, config.keep_checkpoints = 2, 5
  assert loop.run(_state(), _step, _batches(), [], workdir, config=config, mesh=MESH).finished
  assert '"keep_checkpoints": 5' in (tmp_path / 'config.json').read_text()


def test_resume_is_announced(tmp_path, capsys):
  loop.run(_state(), _step, _batches(), [], str(tmp_path), config=_config(every=0),
           mesh=MESH, stop_after=4)
  assert 'resumed' not in capsys.readouterr().err
  loop.run(_state(), _step, _batches(), [], str(tmp_path), config=_config(every=0),
           mesh=MESH)
  assert 'resumed from step 4 (epoch 2 of 2, batch 2 next)' in capsys.readouterr().err
  loop.run(_state(), _step, _batches(), [], str(tmp_path), config=_config(every=0),
           mesh=MESH)
  assert 'resumed from step 6 (all 2 epochs done)' in capsys.readouterr().err


def _garble(workdir, step, how):
  """Overwrites (or truncates to half) every array file of checkpoint `step`."""
  for root, _, files in os.walk(os.path.join(workdir, 'checkpoints', str(step), 'state')):
    for name in files:
      path = os.path.join(root, name)
      if how == 'garbage':
        with open(path, 'wb') as f:
          f.write(b'garbage')
      else:
        os.truncate(path, os.path.getsize(path) // 2)


@pytest.mark.parametrize('how', ['garbage', 'truncated'])
def test_an_unreadable_checkpoint_falls_back_to_the_newest_readable(tmp_path, how):
  whole = loop.run(_state(), _step, _batches(), [], str(tmp_path / 'whole'),
                   config=_config(), mesh=MESH)
  workdir = str(tmp_path / 'w')
  loop.run(_state(), _step, _batches(), [], workdir, config=_config(), mesh=MESH,
           stop_after=4)
  assert _steps_saved(workdir) == [2, 3, 4]
  _garble(workdir, 4, how)
  with logged_warnings() as logged:
    result = loop.run(_state(), _step, _batches(), [loop.LogMetrics()], workdir,
                      config=_config(), mesh=MESH)
  assert any('cannot restore checkpoint' in m and '/checkpoints/4' in m and
             'resuming from step 3' in m for m in logged), logged
  assert float(result.state['total']) == float(whole.state['total'])
  assert os.path.isdir(os.path.join(workdir, checkpoint_lib.UNREADABLE_DIR, '4'))
  assert _steps_saved(workdir) == [2, 3, 4, 6]  # Step 4 saved anew, readable.
  assert _finite_checkpoint(workdir, 4)
  steps = [r['step'] for r in metrics_lib.read_jsonl(os.path.join(workdir, 'metrics.jsonl'))]
  assert steps == [4, 5, 6]  # From the fallback on, each step once.


def test_no_readable_checkpoint_is_refused_and_nothing_is_moved(tmp_path):
  workdir = str(tmp_path)
  loop.run(_state(), _step, _batches(), [], workdir, config=_config(), mesh=MESH,
           stop_after=4)
  for step in (2, 3, 4):
    _garble(workdir, step, 'garbage')
  with pytest.raises(checkpoint_lib.CheckpointError,
                     match=r'no readable checkpoint in .* \(steps 4, 3, 2: cannot restore'):
    loop.run(_state(), _step, _batches(), [], workdir, config=_config(), mesh=MESH)
  assert _steps_saved(workdir) == [2, 3, 4]
  assert not os.path.exists(os.path.join(workdir, checkpoint_lib.UNREADABLE_DIR))


def test_a_checkpoint_of_another_model_is_not_taken_for_a_broken_one(tmp_path):
  loop.run(_state(), _step, _batches(), [], str(tmp_path), config=_config(), mesh=MESH,
           stop_after=2)
  ckpt = checkpoint_lib.Checkpointer(str(tmp_path))
  other = {'step': jnp.zeros((), jnp.int32), 'total': jnp.zeros((3,), jnp.float32)}
  with pytest.raises(checkpoint_lib.CheckpointError, match='does not match') as info:
    ckpt.restore(other)
  ckpt.close()
  assert not isinstance(info.value, checkpoint_lib.CorruptCheckpoint)


def test_keep_checkpoints_must_keep_one():
  with pytest.raises(ValueError, match='keep_checkpoints must be >= 1, got 0'):
    checkpoint_lib.Checkpointer('/nonexistent/never', max_to_keep=0)
  assert not os.path.exists('/nonexistent/never')


class _Fails(loop.Hook):
  def __init__(self, essential):
    self.essential = essential

  def end_epoch(self, run, state):
    raise OSError(28, 'No space left on device')


def test_a_failing_non_essential_hook_is_a_warning(tmp_path):
  with logged_warnings() as logged:
    result = loop.run(_state(), _step, _batches(), [_Fails(essential=False),
                                                    loop.LogMetrics()],
                      str(tmp_path / 'a'), config=_config(), mesh=MESH)
  assert result.finished and _steps_saved(str(tmp_path / 'a')) == [2, 3, 4, 6]
  assert sum('_Fails.end_epoch failed at step' in m and 'No space left' in m
             for m in logged) == 2  # Both epoch ends.
  with pytest.raises(OSError, match='No space left'):
    loop.run(_state(), _step, _batches(), [_Fails(essential=True)], str(tmp_path / 'b'),
             config=_config(), mesh=MESH)


def test_tensorboard_failures_do_not_stop_the_record(tmp_path):
  writer = metrics_lib.MetricWriter(str(tmp_path))
  if writer._tb is None:
    pytest.skip('tensorboardX is not installed')

  class Broken:
    def add_scalar(self, *args):
      raise OSError(28, 'No space left on device')

    def close(self):
      pass

  writer._tb = Broken()
  with logged_warnings() as logged:
    writer.write(1, {'loss': 1.0})
    writer.write(2, {'loss': 0.5})
  writer.close()
  assert [r['loss'] for r in metrics_lib.read_jsonl(writer.path)] == [1.0, 0.5]
  assert sum('TensorBoard output stopped' in m for m in logged) == 1
