"""The functions' own output (powertools' JSON log lines, EMF metrics, warnings) kept apart from the sandbox's
narration: while installed, whatever a Lambda handler writes to stdout or stderr goes to a log file, and what
every other thread writes (the demo's narration, the timeline, the CLI) to the terminal as before.

The handlers run in this process (spothub/sandbox/lambda_runtime.py), so the split is by thread: a thread that is
running an invocation now writes to the file.
"""

from __future__ import annotations

import io
import sys
import threading
from pathlib import Path
from typing import TextIO

from spothub.sandbox.lambda_runtime import current_function


class ThreadRoutedStream(io.TextIOBase):
    """A text stream that writes to `functions` from a thread running a Lambda invocation, to `terminal` otherwise."""

    def __init__(self, terminal: TextIO, functions: TextIO, lock: threading.Lock) -> None:
        super().__init__()
        self.terminal = terminal
        self._functions = functions
        self._lock = lock

    def _target(self) -> TextIO:
        return self._functions if current_function() is not None else self.terminal

    def write(self, text: str) -> int:
        target = self._target()
        if target is self._functions:
            with self._lock:
                target.write(text)
                target.flush()
        else:
            target.write(text)
        return len(text)

    def flush(self) -> None:
        self.terminal.flush()

    def isatty(self) -> bool:
        return self.terminal.isatty()

    def fileno(self) -> int:
        return self.terminal.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.terminal, "encoding", "utf-8")


class FunctionLogs:
    """Install with `open()`, restore the process's streams with `close()`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: TextIO | None = None
        self._saved: tuple[TextIO, TextIO] | None = None

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")
        lock = threading.Lock()
        self._saved = (sys.stdout, sys.stderr)
        sys.stdout = ThreadRoutedStream(sys.stdout, self._file, lock)
        sys.stderr = ThreadRoutedStream(sys.stderr, self._file, lock)

    def close(self) -> None:
        if self._saved is not None:
            sys.stdout, sys.stderr = self._saved
            self._saved = None
        if self._file is not None:
            self._file.close()
            self._file = None
