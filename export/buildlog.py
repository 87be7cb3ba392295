"""Where `export.compile` sends the chatter of the libraries it drives: `build.log`, not the terminal.

Two sources write past the build's own progress lines:

* ONNX Runtime's quantizer calls ``logging.warning(...)`` on the root logger (the
  ``WARNING:root:...`` lines: "consider pre-processing", "Axis 1 is out-of-range for weight ...");
  with no handler installed, the first such call installs one on stderr (``logging.basicConfig``).
* The QNN libraries print a banner from native code on file descriptor 1 or 2 when the first HTP
  session opens (`` # LIBNATIVE: No alternate configuration ...``), past ``sys.stdout``.

:class:`BuildLog` attaches a root-logger handler for the whole build, and :meth:`BuildLog.native`
points file descriptors 1 and 2 at the log around the calls that open sessions. The build's own
lines go to the terminal and are copied into the log, so it reads in order. ``BuildLog(None)``
(``--verbose``) routes nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import TextIO

LOG_NAME = "build.log"
_FORMAT = "%(levelname)s:%(name)s:%(message)s"  # the same lines logging.basicConfig would print


class BuildLog:
    """A build's log file (``path``), or nothing routed at all (``path=None``); a context manager."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._file: TextIO | None = None
        self._handler: logging.Handler | None = None

    def __enter__(self) -> BuildLog:
        if self.path is not None:
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in __exit__)
            self._handler = logging.StreamHandler(self._file)
            self._handler.setFormatter(logging.Formatter(_FORMAT))
            logging.getLogger().addHandler(self._handler)  # basicConfig() then adds no stderr handler
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._handler is not None:
            logging.getLogger().removeHandler(self._handler)
            self._handler = None
        if self._file is not None:
            self._file.close()
            self._file = None

    def write(self, line: str) -> None:
        """Copy one of the build's own progress lines into the log."""
        if self._file is not None:
            self._file.write(line + "\n")
            self._file.flush()

    @contextlib.contextmanager
    def native(self) -> Iterator[None]:
        """While the block runs, what anything (native code included) writes to fds 1 and 2 goes to the log.

        Python's and C's stdio buffers are flushed on the way in and out, so nothing written before
        lands in the log and nothing written inside reaches the terminal later.
        """
        if self._file is None:
            yield
            return
        _flush_all()
        self._file.flush()
        saved: list[tuple[int, int]] = []
        try:
            for fd in (1, 2):
                try:
                    saved.append((fd, os.dup(fd)))
                except OSError:  # that descriptor is closed: nothing to route
                    continue
                os.dup2(self._file.fileno(), fd)
            yield
        finally:
            _flush_all()
            for fd, copy in saved:
                os.dup2(copy, fd)
                os.close(copy)


def _flush_all() -> None:
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        with contextlib.suppress(Exception):
            stream.flush()
    with contextlib.suppress(Exception):  # C stdio: a native printf may sit in libc's buffer
        ctypes.CDLL(None).fflush(None)
