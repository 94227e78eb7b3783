"""The server follows its index: the version being served, handed to each request
(``hold``), replaced atomically when a new one is published.

A new version is noticed by polling the published manifest every ``watch_s`` seconds (its
file's identity: ``manifest.json`` of a directory, the file itself) or on ``reload()``
(``POST /v1/admin/reload``). It is opened, verified at the configured level and warmed up
beside the current one; then new requests get it, requests in flight finish on the version
they hold, and the old one is closed after its last. A version that fails is refused (logged,
reported by ``/health/ready`` and ``/v1/index``) and the current one keeps serving; the same
published files are not tried again until they change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from indexer import Index, LorifError, VerifyReport, available_cpus

from .version import Opener, Version

log = logging.getLogger("lorif")
Stamp = tuple[int, int, int, int]  # (device, inode, size, mtime_ns) of the published file


def published_stamp(path: Path) -> Stamp | None:
    """The identity of what is published at ``path`` (None while nothing is): publishing
    replaces the file by a rename, which changes it."""
    target = path / "manifest.json" if path.is_dir() else path
    try:
        st = os.stat(target)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class Versions:
    def __init__(self, opener: Opener, path: str, watch_s: float):
        self.opener, self.path, self.watch_s = opener, Path(path), watch_s
        self._current: Version | None = None
        self.refused: dict[str, Any] | None = None  # the last version that failed to open
        self._stamp: Stamp | None = None  # what the current (or refused) version was read from
        self._lock = asyncio.Lock()  # one reload at a time
        self._watcher: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self.loop: asyncio.AbstractEventLoop | None = None

    @property
    def current(self) -> Version:
        assert self._current is not None, "the server is not started"
        return self._current

    @property
    def started(self) -> bool:
        return self._current is not None

    async def start(self, index: Index | None, report: VerifyReport | None) -> None:
        """Open the first version (``index``/``report``: opened and checked by the caller)."""
        self.loop = asyncio.get_running_loop()
        stamp = published_stamp(self.path)
        index, report = await self._opened(index, report)
        self._current = await self.opener.open(index, report, 1)
        self._stamp = stamp
        if self.watch_s > 0:
            self._watcher = asyncio.create_task(self._watch(), name="lorif-index-watch")

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[Version]:
        """The current version, kept open until the block ends."""
        version = self.current
        version.users += 1
        try:
            yield version
        finally:
            version.users -= 1
            if version.retired and version.users == 0:
                self._close_later(version)

    async def reload(self) -> dict[str, Any]:
        """Open what is published now if it is another version; {"status": "unchanged" |
        "switched" | "refused", "version": the one serving, "error": why refused}."""
        async with self._lock:
            stamp = published_stamp(self.path)
            loop = asyncio.get_running_loop()
            try:
                index = await loop.run_in_executor(None, Index, self.path)
            except LorifError as e:
                return self._refuse(stamp, None, e)
            if index.fingerprint == self.current.fingerprint:
                index.close()
                self._stamp, self.refused = stamp, None  # what is published is what serves
                return {"status": "unchanged", "version": self.current.summary()}
            try:
                index, report = await self._opened(index, None)
                version = await self.opener.open(index, report, self.current.number + 1)
            except Exception as e:  # noqa: BLE001 - any failure refuses the version
                return self._refuse(stamp, index.fingerprint, e)
            old, self._current, self._stamp, self.refused = self.current, version, stamp, None
            old.retired = True
            if old.users == 0:
                self._close_later(old)
            log.info(
                "serving index version %d (%s, %d rows); version %d closes after its last query",
                version.number,
                version.fingerprint,
                len(version.index),
                old.number,
            )
            return {"status": "switched", "version": version.summary()}

    def _refuse(self, stamp: Stamp | None, fingerprint: str | None, e: Exception) -> dict[str, Any]:
        self._stamp = stamp  # not tried again until the published files change
        self.refused = {
            "fingerprint": fingerprint,
            "error": str(e),
            "at": datetime.now(UTC).isoformat(),
        }
        log.error(
            "refused the published index version (%s); still serving version %d (%s)",
            e,
            self.current.number,
            self.current.fingerprint,
        )
        return {"status": "refused", "version": self.current.summary(), "error": str(e)}

    def stale(self) -> None:
        """A scorer found its version's files gone (any thread): open the published one."""
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(lambda: self._spawn(self.reload()))

    async def _opened(
        self, index: Index | None, report: VerifyReport | None
    ) -> tuple[Index, VerifyReport]:
        """``index`` (opened here when None) with its check at the configured level."""
        loop = asyncio.get_running_loop()
        if index is None:
            index = await loop.run_in_executor(None, Index, self.path)
        if report is None:
            mode = self.opener.settings.verify
            try:
                report = await loop.run_in_executor(None, index.verify, mode, available_cpus())
            except BaseException:
                index.close()
                raise
        log.info(
            "index %s (%s): %s check (%s) of %.1f MiB of factors in %.2f s",
            index.path,
            index.fingerprint,
            report.mode,
            report.method,
            report.checked_bytes / 2**20,
            report.seconds,
        )
        return index, report

    async def _watch(self) -> None:
        """Poll the published file's identity; reload when it changes."""
        while True:
            await asyncio.sleep(self.watch_s)
            if published_stamp(self.path) not in (self._stamp, None):
                try:
                    await self.reload()
                except Exception:
                    log.exception("reloading the index failed")

    def _close_later(self, version: Version) -> None:
        self._spawn(version.close())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        async with self._lock:
            if self._closing:
                await asyncio.gather(*self._closing, return_exceptions=True)
            if self._current is not None:
                await self._current.close()
        await asyncio.get_running_loop().run_in_executor(None, self.opener.close)
