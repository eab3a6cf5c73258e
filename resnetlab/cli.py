"""The `resnetlab` command: parses arguments and calls the package. Thin by design.

Every subcommand lives in resnetlab/commands/ and registers its own parser. Failures on bad input
end in one line on stderr and a non-zero exit (set RESNETLAB_DEBUG=1 for the full traceback).
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import os
import sys
from collections.abc import Iterator
from types import ModuleType

from .errors import ResnetlabError, one_line


def command_modules() -> tuple[ModuleType, ...]:
    """The subcommands' modules, in --help's order. Imported here, not at the top, because they
    load PyTorch: main catches a Ctrl-C while that takes its second or two."""
    from .commands import data, deploy, experiment, infer, models, train

    return (models, data, train, infer, deploy, experiment)


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line that points to the subcommand's --help."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}{help_hint(self.prog)}\n")


def help_hint(prog: str) -> str:
    """Where an argument error sends the reader: ' (see `resnetlab train --help`)'."""
    return f" (see `{prog} --help`)"


def _mark_help(parser: argparse.ArgumentParser) -> None:
    """Give every subcommand's namespace its own prog, for errors raised after parsing."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                sub.set_defaults(help_prog=sub.prog)
                _mark_help(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="resnetlab",
        description="Build, train, evaluate, explain, export and benchmark residual networks.",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"resnetlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in command_modules():
        module.register(sub)
    _mark_help(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script and of `python -m resnetlab`."""
    try:
        parser = build_parser()
    except KeyboardInterrupt:  # during start-up: PyTorch and the subcommands still loading
        print("resnetlab: interrupted", file=sys.stderr)
        return 130
    args = parser.parse_args(argv)
    debug = os.environ.get("RESNETLAB_DEBUG") == "1"
    _print_any_file_name()
    try:
        with _lost_interrupts() as lost:
            code = int(args.func(args) or 0)
        if lost:  # a Ctrl-C or a stop landed where Python could not raise it: report it now
            raise lost[0]
        return code
    except BrokenPipeError:
        # the reader went away (`resnetlab models --json | head -3`): not an error; keep the
        # interpreter's final flush of stdout from failing again on the closed pipe
        _silence_stdout()
        return 0
    except ResnetlabError as e:
        if debug:
            raise
        text = e.for_command_line()
        if text.startswith("--"):  # about an argument: its meaning is one --help away
            text += help_hint(getattr(args, "help_prog", f"resnetlab {args.command}"))
        print(f"resnetlab {args.command}: error: {text}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"resnetlab {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # last resort: a bug or an unforeseen failure is still one line
        if debug:
            raise
        text = str(e).strip()
        first = one_line(text.splitlines()[0]) if text else ""
        hint = "" if isinstance(e, (OSError, ValueError, RuntimeError)) else UNEXPECTED_HINT
        print(
            f"resnetlab {args.command}: error: {type(e).__name__}: {first}{hint}", file=sys.stderr
        )
        return 1


UNEXPECTED_HINT = " (unexpected; RESNETLAB_DEBUG=1 shows the traceback)"


@contextlib.contextmanager
def _lost_interrupts() -> Iterator[list[BaseException]]:
    """A Ctrl-C that lands in a callback (a weakref finaliser inside matplotlib) is printed by
    Python as 'Exception ignored in ...' with a traceback, and the command goes on to exit 0; so
    is the error a signal handler raises there (a prepared cache changed under a run): while
    inside, such an interrupt or error is noted in the list instead, for main to report."""
    caught: list[BaseException] = []
    previous = sys.unraisablehook

    def hook(unraisable) -> None:
        if isinstance(unraisable.exc_value, (KeyboardInterrupt, ResnetlabError)):
            caught.append(unraisable.exc_value)
        else:
            previous(unraisable)

    sys.unraisablehook = hook
    try:
        yield caught
    finally:
        sys.unraisablehook = previous


def _print_any_file_name() -> None:
    """A file name of bytes that are not UTF-8 (legal on Linux) reaches Python as surrogates; in a
    UTF-8 locale stdout would refuse to print it after the work is done: print its bytes back, as
    ls does. Under another encoding (PYTHONIOENCODING=ascii), what it cannot encode is escaped,
    as on stderr, instead of failing."""
    if getattr(sys.stdout, "errors", None) == "strict" and hasattr(sys.stdout, "reconfigure"):
        with contextlib.suppress(ValueError, OSError, LookupError, TypeError):
            utf8 = codecs.lookup(sys.stdout.encoding).name == "utf-8"
            sys.stdout.reconfigure(errors="surrogateescape" if utf8 else "backslashreplace")


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout is not a real file (captured in tests)
        pass


if __name__ == "__main__":
    sys.exit(main())
