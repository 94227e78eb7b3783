"""Prometheus metrics of one app instance (own registry, so tests can build many apps)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.queue_depth = Gauge("lorif_queue_depth", "Queries waiting to be scored", registry=r)
        self.batch_size = Histogram(
            "lorif_batch_size",
            "Queries per scan",
            registry=r,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
        )
        self.scans = Counter("lorif_scans", "Scans of the factor store", registry=r)
        self.bytes_scanned = Counter("lorif_bytes_scanned", "Factor bytes read", registry=r)
        self.scan_seconds = Histogram("lorif_scan_seconds", "Seconds per scan", registry=r)
        self.cache = Counter("lorif_cache", "Cache lookups", ["result"], registry=r)
        self.scorer_up = Gauge(
            "lorif_scorer_up", "1 while the scorer takes calls, 0 while it restarts", registry=r
        )
        self.scorer_restarts = Gauge(
            "lorif_scorer_restarts", "Times the scorer process was restarted", registry=r
        )
        self.scorer_spare = Gauge(
            "lorif_scorer_spare", "1 while a spare scorer process waits, imports done", registry=r
        )
        self.index_version = Gauge(
            "lorif_index_version",
            "Versions of the index served since start (1 = the first)",
            registry=r,
        )
        self.index_rows = Gauge("lorif_index_rows", "Rows of the index version served", registry=r)
        self.responses = Counter(
            "lorif_responses", "HTTP responses", ["route", "status"], registry=r
        )

    def on_scan(self, n_queries: int, n_bytes: int, seconds: float) -> None:
        self.scans.inc()
        self.bytes_scanned.inc(n_bytes)
        self.scan_seconds.observe(seconds)
