"""Data parallelism over all devices with jit and shardings (one or many hosts).

The step functions are written for the global batch. Placing the batch sharded
along its first axis over a 1-D mesh and everything else replicated lets XLA split
the computation; every reduction over the batch (losses, batch-norm statistics, and
so H·v and the mixed second-order products) is then taken over the global batch, so
N devices compute what one device would on the same batch.

Many hosts run the same program, each process feeding its slice of every global
batch (`put_batch`); the state stays replicated on every device of every host. Only
process 0 (`is_primary`) reads and writes files: checkpoints, metrics, genotypes.
What it read (the resumed state) reaches the others by `broadcast_bytes`, so the
hosts need no shared file system.
"""

from __future__ import annotations

import jax
from jax.experimental import multihost_utils
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def initialize_distributed(coordinator: str = '', num_processes: int = 0,
                           process_id: int = -1) -> None:
  """Joins a multi-host run; no-op for one process.

  With no arguments JAX auto-detects cluster environments (SLURM, TPU pods, Open MPI).
  CPU hosts exchange their collectives over gloo (JAX's CPU backend has none of its
  own across processes); accelerators use their own.

  Args:
    coordinator: `host:port` of process 0, reachable from every process.
    num_processes: how many processes take part.
    process_id: this one's index, 0 .. num_processes - 1.
  """
  if coordinator or num_processes > 1:
    kwargs = {'coordinator_address': coordinator or None,
              'num_processes': num_processes or None,
              'process_id': process_id if process_id >= 0 else None}
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(**kwargs)


def is_primary() -> bool:
  """Whether this process writes the run's files (process 0)."""
  return jax.process_index() == 0


def broadcast_bytes(data: bytes | None) -> bytes:
  """Process 0's `data` on every process (`data` itself when there is one process).

  Args:
    data: the bytes to send, on process 0; ignored (may be None) elsewhere.

  Returns:
    Process 0's bytes, bit for bit: they travel as uint8 arrays summed with zeros.
  """
  if jax.process_count() == 1:
    return data
  primary = is_primary()
  if primary and len(data) >= 2**31:
    raise ValueError(f'cannot broadcast {len(data)} bytes (limit 2 GiB)')
  n = int(multihost_utils.broadcast_one_to_all(
      np.array([len(data) if primary else 0], np.int32))[0])
  buf = np.frombuffer(data, np.uint8) if primary else np.zeros(n, np.uint8)
  return np.asarray(multihost_utils.broadcast_one_to_all(buf)).astype(np.uint8).tobytes()


def data_mesh(devices=None) -> Mesh:
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), ('data',))


def check_batch(batch_size: int, mesh: Mesh, what: str = 'batch_size') -> None:
  n = mesh.devices.size
  if batch_size % n:
    raise ValueError(f'{what}={batch_size} is not divisible by the {n} devices')


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh, axis: int = 0) -> NamedSharding:
  """Arrays split along `axis` (the batch axis) over the mesh."""
  return NamedSharding(mesh, P(*[None] * axis, 'data'))


def put_batch(batch, mesh: Mesh, axis: int = 0):
  """Places this process's part of the global batch, sharded over the mesh.

  Args:
    batch: a pytree of host arrays of the global batch.
    mesh: the devices.
    axis: the batch axis of every array with one (0 for images; 1 for the
      time-major [T, B] chunks of the language model). 0-d leaves (e.g. a chunk's
      length) are replicated.

  Returns:
    The batch as global arrays; every device holds its slice along `axis`.
  """
  n_proc, idx = jax.process_count(), jax.process_index()

  def put(x):
    x = np.asarray(x)
    if x.ndim == 0:  # Every process holds the whole value.
      return jax.make_array_from_process_local_data(replicated(mesh), x, x.shape)
    rows = x.shape[axis] // n_proc
    local = x[(slice(None),) * axis + (slice(idx * rows, (idx + 1) * rows),)]  # A view.
    return jax.make_array_from_process_local_data(batch_sharded(mesh, axis), local, x.shape)

  return jax.tree.map(put, batch)


def put_replicated(tree, mesh: Mesh):
  """`tree` on every device of `mesh`; with many processes each must pass equal values."""
  if jax.process_count() == 1:
    return jax.device_put(tree, replicated(mesh))
  rep = replicated(mesh)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(rep, np.asarray(x)), tree)


def jit(fn, mesh: Mesh, *, batch_args: int = 1, donate_state: bool = False):
  """`fn(state, *batches) -> outputs` jitted for data parallelism over `mesh`.

  The state (the first argument) and the outputs are replicated over the mesh; the
  batches keep the sharding `put_batch` gave them, so one rule serves image batches
  (split on axis 0) and time-major chunks (axis 1). The state's sharding is fixed,
  not inferred: parts a hook made anew (a zero hidden state) must not be laid out
  otherwise than the state the step returns, whose buffers they are donated to.

  Args:
    fn: a step or evaluation function of the global batch.
    mesh: the devices.
    batch_args: how many batch arguments follow the state.
    donate_state: let XLA write the new state into the old one's buffers (steps,
      whose caller drops the old state; not evaluations).

  Returns:
    The jitted function.
  """
  rep = replicated(mesh)
  return jax.jit(fn, in_shardings=(rep,) + (None,) * batch_args, out_shardings=rep,
                 donate_argnums=(0,) if donate_state else ())
