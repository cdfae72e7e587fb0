"""Running command services: a registered executable, with the arguments its service passes, and no shell.

Only the workers started with ``machinery worker --commands`` run them. Each call runs the program in a fresh
working directory, removed afterwards, with the service's declared environment and nothing else, in a process
group of its own: past the service's timeout the whole group gets SIGTERM, then SIGKILL, and whatever the program
left running is killed once it exits. Standard output and error are read up to a limit; what is past it is
dropped and the output says it was cut (``truncated``).

Exit code 0 completes the call; a code the service lists as transient is retried under its retry policy; any
other fails the step with the code and the end of standard error.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from machinery.engine.calls import Call, CallFailure, ErrorKind
from machinery.engine.errors import NotFound
from machinery.engine.flags import argv
from machinery.engine.model import CommandTarget, Executable
from machinery.programs import commands_refusal

DEFAULT_MAX_OUTPUT = 1024 * 1024
KILL_GRACE = 2.0
"""Seconds a program has between SIGTERM and SIGKILL once its timeout is over."""
_STDERR_TAIL = 500
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Run:
    """How a program ended: its exit code (negative: the signal that killed it), what it wrote, whether timed out."""

    exit_code: int
    stdout: bytes
    stderr: bytes
    truncated: bool
    timed_out: bool


class CommandCaller:
    """The caller of services of kind ``command``, for the workers started to run them.

    ``executables`` finds a registered executable by name; ``allowed`` is this worker's MACHINERY_COMMANDS_ALLOWED,
    checked again before each run; ``root`` whether this worker may run parameters that require root.
    """

    def __init__(
        self,
        executables: Callable[[str], Executable],
        allowed: Sequence[Path],
        *,
        root: bool = False,
        max_output: int = DEFAULT_MAX_OUTPUT,
    ) -> None:
        self.executables = executables
        self.allowed = tuple(allowed)
        self.root = root
        self.max_output = max_output

    def call(self, call: Call, event_id: str) -> tuple[Any, CallFailure | None]:
        service = call.service
        target = service.endpoint
        assert isinstance(target, CommandTarget)
        try:
            executable = self.executables(target.executable)
        except NotFound:
            return None, CallFailure(
                f"executable '{target.executable}' is no longer registered", False, ErrorKind.CONFIG
            )
        refused = commands_refusal(executable.path, self.allowed)
        if refused:
            return None, CallFailure(f"this worker may not run it: {refused}", False, ErrorKind.CONFIG)
        rooted = [a.flag for a in target.arguments if (p := executable.parameter(a.flag)) and p.requires_root]
        if rooted and not self.root:
            message = (
                f"{', '.join(rooted)} of {executable.name} requires root, and this worker was not started to allow"
                " it (machinery worker --commands --allow-root)"
            )
            return None, CallFailure(message, False, ErrorKind.CONFIG)
        args, wrong = argv(executable, target, call.inputs)
        if wrong:
            return None, CallFailure("; ".join(wrong), False, ErrorKind.INPUT)
        stdin = call.inputs.get(target.stdin, "") if target.stdin is not None else ""
        try:
            run = run_program(args, dict(target.environment), stdin.encode(), service.timeout, self.max_output)
        except OSError as e:
            return None, CallFailure(f"{executable.path} could not be run: {e}", False, ErrorKind.CONFIG)
        return _result(run, target, executable, service.timeout)


def _result(run: Run, target: CommandTarget, executable: Executable, timeout: float) -> tuple[Any, CallFailure | None]:
    stderr = run.stderr.decode("utf-8", "replace")
    details = {"exit_code": run.exit_code, "stderr": stderr[-_STDERR_TAIL:]}
    if run.timed_out:
        message = f"{executable.name} did not end within {timeout:g} s; its process group was killed"
        return None, CallFailure(message, True, ErrorKind.TIMEOUT, details)
    if run.exit_code < 0:
        message = f"{executable.name} was killed by signal {-run.exit_code}"
        return None, CallFailure(message, False, ErrorKind.EXIT, details)
    if run.exit_code != 0:
        transient = run.exit_code in target.transient_exit_codes
        tail = stderr[-_STDERR_TAIL:].strip()
        message = f"{executable.name} exited with code {run.exit_code}" + (f": {tail}" if tail else "")
        return None, CallFailure(message, transient, ErrorKind.EXIT, details)
    stdout = run.stdout.decode("utf-8", "replace")
    if target.stdout == "json":
        if run.truncated:
            message = f"{executable.name} wrote more than the limit to stdout, which was cut before it could be read"
            return None, CallFailure(message, False, ErrorKind.SIZE)
        try:
            return json.loads(stdout), None
        except ValueError:
            message = f"{executable.name} wrote to stdout what is not JSON: {stdout[:300]!r}"
            return None, CallFailure(message, False, ErrorKind.JSON)
    return {"exit_code": 0, "stdout": stdout, "stderr": stderr, "truncated": run.truncated}, None


def run_program(args: list[str], env: dict[str, str], stdin: bytes, timeout: float, limit: int) -> Run:
    """Run ``args`` (no shell) in a fresh directory with only ``env``, in a new session; see the module."""
    workdir = tempfile.mkdtemp(prefix="machinery-command-")
    try:
        process = subprocess.Popen(
            args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=workdir,
            env=env,
            start_new_session=True,
            close_fds=True,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,  # noqa: PLW1509
        )
        outputs = [_Capture(process.stdout, limit), _Capture(process.stderr, limit)]
        feeder = threading.Thread(target=_feed, args=(process.stdin, stdin), daemon=True)
        feeder.start()
        timed_out = False
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            _signal_group(process.pid, signal.SIGTERM)
            try:
                process.wait(KILL_GRACE)
            except subprocess.TimeoutExpired:
                _signal_group(process.pid, signal.SIGKILL)
                process.wait()
        # Whatever the program left behind in its group goes with it: no orphan outlives a call.
        _signal_group(process.pid, signal.SIGKILL)
        for capture in outputs:
            capture.thread.join(KILL_GRACE)
        out, err = outputs
        return Run(process.returncode, out.data, err.data, out.cut or err.cut, timed_out)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _die_with_parent() -> None:
    """In the child, before exec: be killed if the worker process dies, rather than run on unwatched."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _feed(pipe: IO[bytes] | None, data: bytes) -> None:
    if pipe is None:
        return
    with contextlib.suppress(BrokenPipeError, OSError):
        pipe.write(data)
    with contextlib.suppress(BrokenPipeError, OSError):
        pipe.close()


class _Capture:
    """Reads a pipe to its end in a thread, keeping its first ``limit`` bytes; ``cut`` if there were more."""

    def __init__(self, pipe: IO[bytes] | None, limit: int) -> None:
        self.limit = limit
        self.chunks: list[bytes] = []
        self.size = 0
        self.cut = False
        self.thread = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self.thread.start()

    @property
    def data(self) -> bytes:
        return b"".join(self.chunks)

    def _read(self, pipe: IO[bytes] | None) -> None:
        if pipe is None:
            return
        with pipe:
            while chunk := pipe.read1(65536) if hasattr(pipe, "read1") else pipe.read(65536):
                room = self.limit - self.size
                if len(chunk) > room:
                    self.cut = True
                    chunk = chunk[: max(room, 0)]
                self.chunks.append(chunk)
                self.size += len(chunk)
