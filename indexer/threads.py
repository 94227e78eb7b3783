"""How many CPU threads torch may use: the CPUs this process may actually run on.

torch's default is every core of the machine. In a container with a CPU quota that
oversubscribes: OpenMP threads wait at every barrier for a thread that is not scheduled
(measured on a 2-core machine with one core busy elsewhere: a build 1.7x slower with 2 threads
than with 1; the issue that asked for this saw 6-8x on a loaded machine). So:

- ``available_cpus()``: the CPUs of this process's affinity mask, capped by a cgroup CPU quota
  (v2 ``cpu.max`` or v1 ``cfs_quota_us / cfs_period_us``), rounded up;
- ``auto_threads()``: ``$LORIF_THREADS`` when set, else the available CPUs (other work on the
  machine is not guessed at: a server started on a momentarily busy machine would keep too few
  threads; set ``LORIF_THREADS`` where the cores are shared);
- ``use_threads(n)``: set torch's intra-op threads (0 = auto) and return the number used.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

from .errors import ConfigError

ENV = "LORIF_THREADS"


def _cgroup_quota(root: Path) -> float | None:
    """CPUs allowed by a cgroup quota, or None when there is none (or no cgroup fs)."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]  # cgroup v2
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())  # cgroup v1
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None


CGROUP = Path("/sys/fs/cgroup")


def available_cpus(cgroup: Path = CGROUP) -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    quota = _cgroup_quota(cgroup)
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def auto_threads() -> int:
    """``$LORIF_THREADS`` if set (> 0), else the available CPUs (also for 0, which the
    service's setting documents as "the CPUs available")."""
    env = os.environ.get(ENV, "").strip()
    try:
        n = int(env) if env else 0
    except ValueError:
        n = -1
    if n < 0:
        raise ConfigError(f"{ENV} must be 0 (the CPUs available) or a thread count, got {env!r}")
    return n or available_cpus()


def use_threads(n: int = 0) -> int:
    """Let torch use ``n`` intra-op threads (0 = ``auto_threads()``); returns the number."""
    threads = n if n > 0 else auto_threads()
    torch.set_num_threads(threads)
    return threads
