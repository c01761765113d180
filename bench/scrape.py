"""A Prometheus stand-in for ``make bench``: every broker's ``/metrics`` fetched every few
seconds on a thread of its own while the benchmark runs, so "with metrics on" includes what
scrapes cost the brokers, not only the counters on the hot path.

``Scraper`` is bounded (one GET per broker per interval, a 5 s timeout each) and stopped by the
bench on every way out; it reports how many scrapes succeeded, how many failed, the median and
largest scrape time and the largest body, into the run's JSON (``metrics_scrapes``).
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

from raftlog.client.stats import percentile

__all__ = ["SCRAPE_INTERVAL_S", "Scraper"]

SCRAPE_INTERVAL_S = 5.0  # the scrape_interval of examples/prometheus/prometheus.yml
_TIMEOUT_S = 5.0


class Scraper:
    def __init__(self, urls: Sequence[str], interval_s: float = SCRAPE_INTERVAL_S) -> None:
        self._urls = list(urls)
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-scraper", daemon=True)
        self.seconds: list[float] = []
        self.failures = 0
        self.body_bytes_max = 0

    def __enter__(self) -> Scraper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(_TIMEOUT_S * len(self._urls) + self._interval_s)

    def _run(self) -> None:
        while not self._stop.is_set():
            for url in self._urls:
                started = time.perf_counter()
                try:
                    with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as answer:
                        body = answer.read()
                except (OSError, urllib.error.URLError):
                    self.failures += 1  # a broker killed by the failover run, most likely
                    continue
                self.seconds.append(time.perf_counter() - started)
                self.body_bytes_max = max(self.body_bytes_max, len(body))
            self._stop.wait(self._interval_s)

    def summary(self) -> dict[str, Any]:
        ms = sorted(s * 1000 for s in self.seconds)
        return {
            "interval_s": self._interval_s,
            "scrapes": len(ms),
            "failures": self.failures,
            "p50_ms": round(percentile(ms, 50), 2) if ms else None,
            "max_ms": round(ms[-1], 2) if ms else None,
            "body_bytes_max": self.body_bytes_max,
        }
