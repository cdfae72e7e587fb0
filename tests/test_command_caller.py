"""The caller of command services, running real programs: argv without a shell, a clean environment, a fresh
directory, limits on time and output, and exit codes."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from machinery.engine.calls import Call
from machinery.engine.errors import NotFound
from machinery.engine.model import Argument, CommandTarget, Executable, Field, Parameter, Service
from machinery.engine.retry import RetryPolicy
from machinery.engine.types import FieldType
from machinery.services.command import CommandCaller
from tests.support import wait_for


def program(tmp_path: Path, body: str, *parameters: Parameter) -> Executable:
    path = tmp_path / "bin" / "program.sh"
    path.parent.mkdir(exist_ok=True)
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return Executable("program", str(path), parameters=parameters)


def call(executable: Executable, *arguments: Argument, inputs: dict[str, Any] | None = None, **target: Any) -> Call:
    timeout = target.pop("timeout", 5.0)
    service = Service(
        "job",
        CommandTarget(executable.name, arguments, **target),
        inputs=(Field("text", FieldType("string")),),
        timeout=timeout,
        retry=RetryPolicy(attempts=1),
    )
    return Call("job", service, inputs or {}, 1, "token", "key")


def caller(executable: Executable, tmp_path: Path, **options: Any) -> CommandCaller:
    def find(name: str) -> Executable:
        if name != executable.name:
            raise NotFound(name)
        return executable

    return CommandCaller(find, [tmp_path / "bin", Path("/usr/bin")], **options)


def test_arguments_go_to_the_program_as_they_are_with_no_shell(tmp_path: Path) -> None:
    exe = program(
        tmp_path,
        'for a in "$@"; do echo "[$a]"; done',
        Parameter("-n", value="string"),
        Parameter("file", value="path"),
    )
    arguments = (Argument("file", input="text"), Argument("-n", value="$(rm -rf /); *"))
    result, failure = caller(exe, tmp_path).call(call(exe, *arguments, inputs={"text": "a b"}), "event")
    assert failure is None
    assert result == {"exit_code": 0, "stdout": "[-n]\n[$(rm -rf /); *]\n[a b]\n", "stderr": "", "truncated": False}


def test_the_program_sees_only_its_declared_environment_and_a_fresh_directory_removed_afterwards(
    tmp_path: Path,
) -> None:
    exe = program(tmp_path, "env | /usr/bin/sort; pwd; ls -A")
    result, failure = caller(exe, tmp_path).call(call(exe, environment={"GREETING": "hello"}), "event")
    assert failure is None
    lines = result["stdout"].splitlines()
    assert "GREETING=hello" in lines
    assert not any(line.startswith(("HOME=", "MACHINERY_")) for line in lines)
    workdir = Path(next(line for line in lines if line.startswith("/")))
    assert workdir.name.startswith("machinery-command-")
    assert not workdir.exists()


def test_stdin_comes_from_an_input(tmp_path: Path) -> None:
    exe = Executable("sort", "/usr/bin/sort", parameters=(Parameter("--reverse"),))
    result, failure = caller(exe, tmp_path).call(
        call(exe, Argument("--reverse"), stdin="text", inputs={"text": "a\nc\nb\n"}), "e"
    )
    assert failure is None and result["stdout"] == "c\nb\na\n"


def test_output_past_the_limit_is_cut_and_said_to_be(tmp_path: Path) -> None:
    exe = program(tmp_path, "/usr/bin/head -c 5000 /dev/zero")
    result, failure = caller(exe, tmp_path, max_output=100).call(call(exe), "event")
    assert failure is None
    assert (len(result["stdout"]), result["truncated"]) == (100, True)


def test_stdout_is_read_as_json_when_asked(tmp_path: Path) -> None:
    exe = program(tmp_path, """echo '{"count": 3}'""")
    assert caller(exe, tmp_path).call(call(exe, stdout="json"), "event") == ({"count": 3}, None)
    bad = program(tmp_path, "echo nope")
    _, failure = caller(bad, tmp_path).call(call(bad, stdout="json"), "event")
    assert failure is not None and failure.kind == "json"


@pytest.mark.parametrize(("code", "transient"), [(75, True), (3, False)])
def test_an_exit_code_fails_the_call_transient_only_if_listed(tmp_path: Path, code: int, transient: bool) -> None:
    exe = program(tmp_path, f"echo 'disk full' >&2; exit {code}")
    _, failure = caller(exe, tmp_path).call(call(exe, transient_exit_codes=(75,)), "event")
    assert failure is not None
    assert (failure.kind, failure.transient) == ("exit", transient)
    assert failure.message == f"program exited with code {code}: disk full"
    assert failure.details == {"exit_code": code, "stderr": "disk full\n"}


def test_a_timeout_ends_the_call(tmp_path: Path) -> None:
    exe = program(tmp_path, "/bin/sleep 30")
    _, failure = caller(exe, tmp_path).call(call(exe, timeout=0.3), "event")
    assert failure is not None and (failure.kind, failure.transient) == ("timeout", True)


def test_a_parameter_requiring_root_runs_only_on_a_worker_that_allows_it(tmp_path: Path) -> None:
    exe = program(tmp_path, "echo ok", Parameter("--raw", requires_root=True))
    _, failure = caller(exe, tmp_path).call(call(exe, Argument("--raw")), "event")
    assert failure is not None and failure.kind == "config"
    assert "--raw of program requires root" in failure.message
    result, failure = caller(exe, tmp_path, root=True).call(call(exe, Argument("--raw")), "event")
    assert failure is None and result["stdout"] == "ok\n"


def test_a_program_this_worker_does_not_allow_is_not_run(tmp_path: Path) -> None:
    exe = Executable("nologin", "/usr/sbin/nologin")
    _, failure = caller(exe, tmp_path).call(call(exe), "event")
    assert failure is not None and failure.kind == "config"
    assert "this worker may not run it" in failure.message


def test_a_value_outside_its_type_is_refused_before_anything_runs(tmp_path: Path) -> None:
    exe = program(tmp_path, "echo ran", Parameter("--port", value="port"))
    _, failure = caller(exe, tmp_path).call(call(exe, Argument("--port", input="text"), inputs={"text": "80"}), "e")
    assert failure is not None and failure.kind == "input"
    assert failure.message == "--port takes a port, not string '80'"


def test_much_input_and_output_at_once_neither_blocks_nor_is_kept_past_the_limit(tmp_path: Path) -> None:
    exe = Executable("cat", "/usr/bin/cat")
    text = "x" * 3_000_000
    result, failure = caller(exe, tmp_path, max_output=1000).call(call(exe, stdin="text", inputs={"text": text}), "e")
    assert failure is None
    assert (result["stdout"], result["truncated"]) == ("x" * 1000, True)


def test_what_a_program_leaves_running_is_killed_when_it_exits(tmp_path: Path) -> None:
    exe = program(tmp_path, "/bin/sleep 60 &\necho $!")
    started = time.monotonic()
    result, failure = caller(exe, tmp_path).call(call(exe), "event")
    assert failure is None
    assert time.monotonic() - started < 5
    child = int(result["stdout"])
    wait_for(lambda: not alive(child), timeout=5, what=f"process {child} to be gone")


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
