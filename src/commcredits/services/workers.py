"""Background workers that run inside each server process: the recharge runner,
the call sweeper and the mail worker. Each job is claimed before it is worked
(a lease, with SKIP LOCKED on PostgreSQL), so several server processes on one
database act once per job."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

IDLE_POLL_SECONDS = 1.0


@dataclass
class Worker:
    name: str
    step: Callable[[], int]  # one pass; returns how many jobs it did
    wakeup: threading.Event | None = None
    poll_seconds: float = IDLE_POLL_SECONDS


@dataclass
class Workers:
    workers: list[Worker] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for worker in self.workers:
            thread = threading.Thread(
                target=self._loop, args=(worker,), name=f"commcredits-{worker.name}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for worker in self.workers:
            if worker.wakeup is not None:
                worker.wakeup.set()
        for thread in self._threads:
            thread.join(timeout=10)

    def _loop(self, worker: Worker) -> None:
        while not self._stop.is_set():
            try:
                done = worker.step()
            except Exception:  # noqa: BLE001 - a worker must outlive one bad pass
                log.exception("%s: pass failed", worker.name)
                done = 0
            if done:
                continue
            if worker.wakeup is not None:
                worker.wakeup.wait(worker.poll_seconds)
                worker.wakeup.clear()
            else:
                self._stop.wait(worker.poll_seconds)
