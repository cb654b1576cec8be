"""Data parallelism over all devices with jit and shardings (one or many hosts).

The step functions are written for the global batch. Placing the batch sharded
along its first axis over a 1-D mesh and everything else replicated lets XLA split
the computation; every reduction over the batch (losses, batch-norm statistics, and
so H·v and the mixed second-order products) is then taken over the global batch, so
N devices compute what one device would on the same batch.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def initialize_distributed(coordinator: str = '', num_processes: int = 0,
                           process_id: int = -1) -> None:
  """Joins a multi-host run; no-op for one process.

  With no arguments JAX auto-detects cluster environments (SLURM, TPU pods, Open MPI).
  """
  if coordinator or num_processes > 1:
    kwargs = {'coordinator_address': coordinator or None,
              'num_processes': num_processes or None,
              'process_id': process_id if process_id >= 0 else None}
    jax.distributed.initialize(**kwargs)


def data_mesh(devices=None) -> Mesh:
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), ('data',))


def check_batch(batch_size: int, mesh: Mesh, what: str = 'batch_size') -> None:
  n = mesh.devices.size
  if batch_size % n:
    raise ValueError(f'{what}={batch_size} is not divisible by the {n} devices')


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P('data'))


def put_batch(batch: dict, mesh: Mesh) -> dict:
  """Places this process's rows of the global batch, sharded over the mesh."""
  sharding = batch_sharded(mesh)
  n_proc, idx = jax.process_count(), jax.process_index()

  def put(x):
    rows = x.shape[0] // n_proc
    local = x[idx * rows:(idx + 1) * rows]
    return jax.make_array_from_process_local_data(sharding, local, x.shape)

  return jax.tree.map(put, batch)


def put_replicated(tree, mesh: Mesh):
  return jax.device_put(tree, replicated(mesh))
