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
import select
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    stdout_cut: bool
    stderr_cut: bool
    timed_out: bool

    @property
    def truncated(self) -> bool:
        return self.stdout_cut or self.stderr_cut


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
        if run.stdout_cut:
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
        try:
            return _Exchange(process, stdin, limit).run(timeout)
        finally:
            # Whatever the program left behind in its group goes with it: no orphan outlives a call.
            _signal_group(process.pid, signal.SIGKILL)
            process.wait()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _die_with_parent() -> None:
    """In the child, before exec: be killed if the worker process dies, rather than run on unwatched."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


class _Exchange:
    """A program's pipes, served by one thread with a selector (as ``Popen.communicate`` does, with limits):
    its stdin written, its stdout and stderr read to their end, their first ``limit`` bytes kept."""

    def __init__(self, process: subprocess.Popen[bytes], stdin: bytes, limit: int) -> None:
        self.process = process
        self.limit = limit
        self.pending = memoryview(stdin)
        self.kept: dict[int, bytearray] = {}
        self.cut: set[int] = set()
        self.selector = selectors.DefaultSelector()
        assert process.stdin is not None and process.stdout is not None and process.stderr is not None
        self.out, self.err = process.stdout.fileno(), process.stderr.fileno()
        self.files = {pipe.fileno(): pipe for pipe in (process.stdin, process.stdout, process.stderr)}
        for fd in (self.out, self.err):
            self.kept[fd] = bytearray()
            self.selector.register(fd, selectors.EVENT_READ)
        if self.pending:
            self.selector.register(process.stdin.fileno(), selectors.EVENT_WRITE)
        else:
            process.stdin.close()

    def run(self, timeout: float) -> Run:
        """Serve the pipes until the program and what it started are gone; past ``timeout`` s its group gets
        SIGTERM, then SIGKILL after :data:`KILL_GRACE` s."""
        timed_out = False
        deadline = time.monotonic() + timeout
        with self.selector:
            while self.selector.get_map():
                now = time.monotonic()
                if now >= deadline:
                    if not timed_out:
                        timed_out = True
                        _signal_group(self.process.pid, signal.SIGTERM)
                        deadline = now + KILL_GRACE
                    else:
                        _signal_group(self.process.pid, signal.SIGKILL)
                        deadline = now + KILL_GRACE
                if self.process.poll() is not None:
                    # It has exited: what it left running would hold its pipes open.
                    _signal_group(self.process.pid, signal.SIGKILL)
                for key, _ in self.selector.select(min(0.05, max(0.0, deadline - now))):
                    self._serve(key.fd)
        self.process.wait()
        returncode = self.process.returncode
        out, err = (bytes(self.kept[fd]) for fd in (self.out, self.err))
        return Run(returncode, out, err, self.out in self.cut, self.err in self.cut, timed_out)

    def _serve(self, fd: int) -> None:
        if fd in self.kept:
            chunk = os.read(fd, 65536)
            if not chunk:
                self._close(fd)
                return
            kept = self.kept[fd]
            room = self.limit - len(kept)
            if len(chunk) > room:
                self.cut.add(fd)
            kept += chunk[: max(room, 0)]
            return
        try:
            written = os.write(fd, self.pending[: select.PIPE_BUF])
        except BrokenPipeError:
            written = len(self.pending)
        self.pending = self.pending[written:]
        if not self.pending:
            self._close(fd)

    def _close(self, fd: int) -> None:
        self.selector.unregister(fd)
        self.files[fd].close()
