"""Building an index: featurize every example, factorize, write the rows, compute the curvature
basis and publish (docs/architecture.md, *The data flow*, steps 3-5).

- ``local.py``: ``build_index``, a build in this process (or, under torchrun, its rank's part);
- ``distributed.py``: the same steps on several processes (torch.distributed);
- ``growth.py``: examples added to a sharded index, and its curvature refreshed;
- ``inputs.py``: what every build starts from (model, featurizer, manifest);
- ``steps.py``: the heavy steps they share (featurize rows into a ``RowWriter``, curvature,
  publish);
- ``writers.py``: the sharded writers of a new build and of a growth, started or resumed.
"""

from __future__ import annotations

from .growth import add_examples, refresh_curvature
from .local import build_index

__all__ = ["add_examples", "build_index", "refresh_curvature"]
