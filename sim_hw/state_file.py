"""A simulator's non-volatile memory on disk (``co2scan sim serve --state FILE``).

The file holds the image of :class:`sim_hw.nvm.NonVolatile`; it is rewritten, atomically
(temporary file, fsync, ``os.replace``, fsync of the folder), each time the device writes its
memory, before the spots whose progress it records fire. So a simulator killed at any moment
(SIGKILL included) and started again with the same file comes up as a real device after a power
loss: the pass record restored, the fired-index memory refusing delivered spots, lowered limits
still lowered. A file that cannot be read or is not a memory this device could have written is
refused (:class:`StateFileError`), never replaced by a blank memory: that would forget which
spots have fired. One simulator at a time uses a file (``FILE.lock``). A start that is refused
leaves nothing behind (:meth:`StateFile.discard`): no lock file it created, and no new state
file, whose initialised memory would make the next start look like one after a power loss.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from sim_hw.config import SimConfig
from sim_hw.nvm import NonVolatile


class StateFileError(ValueError):
    """A state file that cannot be used; the message names the file and what is wrong."""

    def __init__(self, path: Path, what: str) -> None:
        super().__init__(f"state file {path}: {what}")
        self.path = path


class StateFile:
    """The state file of one simulated device; ``close()`` releases it, ``discard()`` undoes a
    start that is refused."""

    def __init__(self, path: str | os.PathLike[str], config: SimConfig) -> None:
        self.path = Path(path)
        self.serial = config.serial
        self._last_text: str | None = None
        self._lock_path = self.path.with_name(self.path.name + ".lock")
        self._temporary = self.path.with_name(f".{self.path.name}.tmp")
        self._lock_fd, self._created_lock = self._lock()
        self._new_file = False  # there was none: a file there now was written by this start
        try:
            #: the memory found in the file, None when there was no file (a blank memory)
            self.loaded = self._load(config)
        except BaseException:
            self.discard()
            raise

    def _lock(self) -> tuple[int, bool]:
        """The lock file's descriptor, locked, and whether this call created the file. A lock
        file is removed only by its holder (:meth:`discard`), so one locked here that is no
        longer the file at its path was removed meanwhile: the lock is taken again."""
        while True:
            try:
                try:
                    fd, created = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_EXCL,
                                          0o600), True
                except FileExistsError:
                    fd, created = os.open(self._lock_path, os.O_RDWR), False
            except FileNotFoundError:  # removed between the two opens
                continue
            except OSError as exc:
                raise StateFileError(self.path, f"cannot create {self._lock_path.name} "
                                     f"({exc.strerror or exc})") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise StateFileError(self.path, "in use by another simulator "
                                     "(two devices cannot share one memory)") from None
            try:
                current = os.stat(self._lock_path)
            except FileNotFoundError:
                current = None
            locked = os.fstat(fd)
            if current is not None and (current.st_dev, current.st_ino) == (locked.st_dev,
                                                                           locked.st_ino):
                return fd, created
            os.close(fd)

    def _load(self, config: SimConfig) -> NonVolatile | None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            self._new_file = True
            return None
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise StateFileError(self.path, f"cannot read it ({reason})") from None
        try:
            return NonVolatile.from_json(text, config)
        except ValueError as exc:
            raise StateFileError(self.path, f"{exc}; refused (a blank memory would forget "
                                 "which spots have fired); fix or remove the file") from None

    def write(self, nv: NonVolatile) -> None:
        """Replace the file with ``nv``'s image (nothing to do when it has not changed)."""
        text = nv.to_json(self.serial)
        if text == self._last_text:
            return
        temporary = self._temporary
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # the key
            try:
                data = text.encode("utf-8")
                while data:
                    data = data[os.write(fd, data):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temporary, self.path)
            folder = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(folder)  # the rename itself survives a power loss
            finally:
                os.close(folder)
        except OSError as exc:
            raise StateFileError(self.path, f"cannot write it ({exc.strerror or exc})") from None
        self._last_text = text

    def discard(self) -> None:
        """Undo a start that is refused, then :meth:`close`: remove the state file if this
        start created it (there was none, so it holds only the first power-on) and the lock
        file if this start created that (idempotent)."""
        if self._lock_fd < 0:
            return
        with contextlib.suppress(FileNotFoundError):
            self._temporary.unlink()  # a write that failed half-way
        if self._new_file:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        if self._created_lock:  # while holding it: see _lock
            with contextlib.suppress(FileNotFoundError):
                self._lock_path.unlink()
        self.close()

    def close(self) -> None:
        """Let another simulator use the file (idempotent)."""
        if self._lock_fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
            self._lock_fd = -1
