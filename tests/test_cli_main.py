"""The finjust command's dispatch: only the subcommand being run is imported."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time

import pytest

from finjust.cli.main import SUBCOMMANDS, build_parser, main, subcommand
from finjust.cli.progress import ProgressPrinter

LOADED_AFTER = """
import sys
from finjust.cli.main import main
main(sys.argv[1:])  # a status for --help and usage errors too, no SystemExit
print(sorted(name for name in ("torch", "transformers", "peft") if name in sys.modules))
"""


@pytest.mark.parametrize("argv", [["--help"], ["report", "--help"], ["--debug", "nonsense"]])
def test_help_and_argument_errors_import_no_torch(argv):
    done = subprocess.run([sys.executable, "-c", LOADED_AFTER, *argv], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("command", ["train", "demo", "data", "eval", "compare", "export"])
def test_the_help_of_commands_that_read_recipes_or_registries_imports_no_transformers_or_peft(command):
    # recipe help reads every method's options, compare's and export's help their registries of rows
    # and formats; peft and transformers' model code took ~6 s of each
    argv = [command, "--help"] if command != "data" else ["data", "check", "--help"]
    done = subprocess.run([sys.executable, "-c", LOADED_AFTER, *argv], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] in ("[]", "['torch']")


def test_every_subcommand_builds_with_its_summary():
    parser = build_parser()
    commands = next(action for action in parser._actions if action.dest == "command")
    shown = {choice.dest: choice.help for choice in commands._choices_actions}
    assert shown == {name: summary for name, (_, summary) in SUBCOMMANDS.items()}
    for name in SUBCOMMANDS:
        assert callable(subcommand(name).run)


def test_the_export_summary_names_every_format():
    from finjust.export import FORMATS

    summary = SUBCOMMANDS["export"][1].lower()
    assert all(name in summary for name in FORMATS.names())


def test_options_before_the_subcommand_still_pick_it(monkeypatch):
    ran = []
    monkeypatch.setattr(subcommand("report"), "run", lambda args: ran.append(args.command) or 0)
    assert main(["--debug", "report", "somewhere"]) == 0 and ran == ["report"]


def test_help_is_status_0(capsys):
    assert main(["--help"]) == 0 and "usage: finjust" in capsys.readouterr().out


def test_an_unknown_subcommand_lists_the_known_ones(capsys):
    assert main(["trian"]) == 2  # main(argv) returns a status, argparse's refusals too
    assert "choose from 'demo', 'data', 'train'" in capsys.readouterr().err


def test_ctrl_c_while_the_subcommand_imports_is_one_line_and_status_130(monkeypatch, capsys):
    def interrupted(name):
        raise KeyboardInterrupt  # as while torch and transformers load

    monkeypatch.setattr("finjust.cli.main.subcommand", interrupted)
    assert main(["report", "somewhere"]) == 130
    assert capsys.readouterr().err == "interrupted\n"


def test_an_ascii_terminal_gets_escapes_instead_of_a_crash(monkeypatch):
    out = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(subcommand("report"), "run", lambda args: print("near-duplicates ≈ 5 €") or 0)
    assert main(["report", "somewhere"]) == 0
    out.flush()
    assert out.buffer.getvalue() == b"near-duplicates \\u2248 5 \\u20ac\n"


def test_progress_into_a_closed_pipe_stops_printing_and_lets_the_run_go_on():
    class ClosedPipe(io.StringIO):
        writes = 0

        def write(self, text):
            ClosedPipe.writes += 1
            raise BrokenPipeError(32, "Broken pipe")

    printer = ProgressPrinter(ClosedPipe())
    printer("phase", {"text": "training"})
    printer("phase", {"text": "scoring"})  # no exception, and no second write
    assert ClosedPipe.writes == 1


def test_a_result_shown_to_a_reader_that_has_gone_is_no_error():
    script = "import sys; from finjust.cli.process import show; show('row\\n' * 100_000); sys.exit(3)"
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()  # the reader is gone, as `| head` leaves it
    err = process.stderr.read()
    process.wait()
    assert (process.returncode, err) == (3, b"")  # the command's own status, no traceback, no exit 120


def test_a_signal_the_process_ignores_stays_ignored(monkeypatch):
    from finjust.cli.process import termination_as_interrupt

    monkeypatch.setattr(signal, "getsignal", lambda number: signal.SIG_IGN if number == signal.SIGHUP else None)
    installed = {}
    monkeypatch.setattr(signal, "signal", lambda number, handler: installed.setdefault(number, handler))
    with termination_as_interrupt():  # under nohup: SIGHUP ignored, as the command inherited it
        assert list(installed) == [signal.SIGTERM]


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGHUP])  # docker stop, timeout, a closed terminal
def test_sigterm_or_sighup_stops_a_command_as_ctrl_c_does_and_the_handler_is_given_back(monkeypatch, capsys, number):
    before = signal.getsignal(number)

    def terminated(args):
        os.kill(os.getpid(), number)
        time.sleep(5)  # the signal lands here
        return 0

    monkeypatch.setattr(subcommand("report"), "run", terminated)
    assert main(["report", "somewhere"]) == 128 + number
    assert capsys.readouterr().err == f"terminated ({signal.Signals(number).name})\n"
    assert signal.getsignal(number) is before


def test_ctrl_c_with_stderr_piped_to_a_reader_that_died_too_still_exits_130(monkeypatch):
    class GonePipe(io.StringIO):
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

    def interrupted(args):
        raise KeyboardInterrupt  # `finjust train ... 2>&1 | tee log`: tee stopped by the same Ctrl-C

    monkeypatch.setattr(sys, "stderr", GonePipe())
    monkeypatch.setattr(subcommand("report"), "run", interrupted)
    assert main(["report", "somewhere"]) == 130
