"""What a scan keeps of all N scores besides the top-k (a few KB per query, never the matrix):

- a histogram on fixed signed-log bins, the same for every index and query, so histograms of
  blocks, shards and cached answers add up; 4 bins per decade of |score| from 1e-12 to 1e12
  each way, one bin for |score| < 1e-12 (scores beyond 1e12 fall in the outermost bins);
- with ``totals_by``: the scores summed per value of one metadata key (and each value's row
  count), one ``index_add`` per block.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

BINS_PER_DECADE = 4
LOW_DECADE, HIGH_DECADE = -12, 12
MAG_BINS = (HIGH_DECADE - LOW_DECADE) * BINS_PER_DECADE  # per sign
N_BINS = 2 * MAG_BINS + 1  # negative (most negative first), |s| < 1e-12, positive


def bin_edges() -> list[float]:
    """The N_BINS + 1 ascending edges: bin j holds the scores between edges[j] and
    edges[j + 1] (a score on an edge may fall either side; the outermost bins also hold what
    lies beyond 1e12 in magnitude)."""
    neg = [-(10.0 ** (HIGH_DECADE - j / BINS_PER_DECADE)) for j in range(MAG_BINS + 1)]
    pos = [10.0 ** (LOW_DECADE + j / BINS_PER_DECADE) for j in range(MAG_BINS + 1)]
    return neg + pos


def bin_of(scores: torch.Tensor) -> torch.Tensor:
    """scores (...) -> their bins (...) int64 in [0, N_BINS)."""
    mag = scores.abs().float()
    tiny = mag < 10.0**LOW_DECADE
    m = torch.floor((torch.log10(mag.clamp_min(10.0**LOW_DECADE)) - LOW_DECADE) * BINS_PER_DECADE)
    # NaN (a damaged index: the top-k reports it) counts in the lowest magnitude bin
    m = torch.nan_to_num(m, nan=0.0).clamp(0, MAG_BINS - 1).long()
    signed = torch.where(scores > 0, MAG_BINS + 1 + m, MAG_BINS - 1 - m)
    return torch.where(tiny, torch.full_like(signed, MAG_BINS), signed)


class ScoreHistogram:
    """Counts (Q, N_BINS) of the scores seen, block by block."""

    def __init__(self, n_queries: int, device: torch.device | str):
        self.counts = torch.zeros(n_queries, N_BINS, dtype=torch.int64, device=device)

    def update(self, scores: torch.Tensor) -> None:
        """scores (Q, b) of one block."""
        bins = bin_of(scores).to(self.counts.device)
        if bins.is_cuda:  # bincount's per-block shared-memory histograms: no global atomics
            for q in range(bins.shape[0]):
                self.counts[q] += torch.bincount(bins[q], minlength=N_BINS)
        else:
            self.counts.scatter_add_(1, bins, torch.ones_like(bins))

    def numpy(self) -> npt.NDArray[np.int64]:
        return self.counts.cpu().numpy()


@dataclass
class Totals:
    """The scores summed per value of the metadata key ``key`` over all N rows."""

    key: str
    values: list[str]  # (G,) the key's values, "" where an example lacks the key
    counts: npt.NDArray[np.int64]  # (G,) rows per value
    sums: npt.NDArray[np.float64]  # (Q, G) sum of each query's scores per value; (G,) for one

    def row(self, q: int) -> Totals:
        """Query ``q``'s totals (sums (G,))."""
        return Totals(self.key, self.values, self.counts, self.sums[q])


class GroupSums:
    """Sums (Q, G) of the scores per group, block by block; ``codes`` (N,) gives each row's
    group."""

    def __init__(self, n_queries: int, codes: torch.Tensor, n_groups: int):
        self.codes = codes
        self.sums = torch.zeros(n_queries, n_groups, dtype=torch.float64, device=codes.device)

    def update(self, scores: torch.Tensor, start: int) -> None:
        rows = self.codes[start : start + scores.shape[1]]
        self.sums.index_add_(1, rows, scores.to(self.sums.device, torch.float64))

    def totals(self, key: str, values: list[str]) -> Totals:
        counts = torch.bincount(self.codes, minlength=len(values)).cpu().numpy()
        return Totals(key, values, counts, self.sums.cpu().numpy())
