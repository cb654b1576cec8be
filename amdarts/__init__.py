"""amdarts: stable differentiable architecture search (Amended-DARTS) in JAX/Flax."""

import os


def cache_dir(*parts: str) -> str:
  """The user cache of what amdarts builds once (CPU kernels, corpora, compiled steps).

  $AMDARTS_CACHE if set, else $XDG_CACHE_HOME/amdarts or ~/.cache/amdarts; `parts`
  are joined below it.
  """
  root = os.environ.get('AMDARTS_CACHE') or os.path.join(
      os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache'),
      'amdarts')
  return os.path.join(root, *parts)
