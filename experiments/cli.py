"""The ``emologic`` console script: one dispatcher over a registry of commands.

Each command lives in ``experiments/commands/<name>.py`` and registers itself
with :func:`command`. A command function receives the parsed ``argparse``
namespace and returns an exit code. User errors (``UserError`` and its
subclasses, missing files, bad config) print one line and exit 2 — never a
traceback. Plug-ins (:mod:`experiments.plugins`) are imported first.
"""
from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from dataclasses import dataclass
from typing import Callable


from experiments.plugins import load_plugins  # noqa: E402
from neural.compute import flush_denormals  # noqa: E402
from neural.common import UserError  # noqa: E402  (re-exported for commands)


@dataclass
class Command:
    name: str
    help: str
    example: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    numeric_setup: bool = True  # flush denormals first (training); False for commands that may never import torch


_COMMANDS: dict[str, Command] = {}


def command(name: str, help: str, example: str, configure: Callable | None = None, numeric_setup: bool = True):
    """Register the decorated ``run(args) -> int`` as the command ``name``.

    ``configure(parser)`` adds the command's arguments; ``example`` is shown at the
    end of its ``--help``.

        def _args(p): p.add_argument("run_dir")

        @command("rules", help="Show learned rule probabilities", example="emologic rules runs/latest", configure=_args)
        def rules(args): ...
    """

    def deco(run):
        _COMMANDS[name] = Command(name, help, example, configure or (lambda p: None), run, numeric_setup)
        return run

    return deco


def _load_commands() -> None:
    import experiments.commands as pkg

    for mod in pkgutil.iter_modules(pkg.__path__):
        importlib.import_module(f"{pkg.__name__}.{mod.name}")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command; with ``only``, only that command's options
    are set up (a command's ``configure`` may import what its options list,
    e.g. cache kinds or face backbones, which another command need not pay for)."""
    _load_commands()
    parser = argparse.ArgumentParser(
        prog="emologic",
        description="Neurosymbolic emotion recognition: neural predicates in ProbLog programs.",
        epilog="Example: emologic rules runs/latest",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for cmd in sorted(_COMMANDS.values(), key=lambda c: c.name):
        p = sub.add_parser(
            cmd.name,
            help=cmd.help,
            description=cmd.help,
            epilog=f"Example:\n  {cmd.example}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if only is None or only == cmd.name:
            cmd.configure(p)
        p.set_defaults(_run=cmd.run, _numeric_setup=cmd.numeric_setup)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:  # before parsing: a plug-in's networks and features are choices some options list
        load_plugins()
    except UserError as exc:
        print(f"emologic: error: {exc}", file=sys.stderr)
        return 2
    _load_commands()
    parser = build_parser(argv[0]) if argv and argv[0] in _COMMANDS else build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0
    if getattr(args, "_numeric_setup", True):
        flush_denormals()  # before torch starts its threads (neural/compute.py)
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("emologic: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (``emologic rules RUN | head``): stop quietly, like
        # other command-line tools; stdout goes to devnull so the final flush cannot fail
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (UserError, FileNotFoundError, NotADirectoryError) as exc:
        # User-facing failures are one clear line; programming errors keep their traceback.
        print(f"emologic {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    # `python -m experiments.cli`: this module runs as __main__, while the commands
    # register themselves with the importable experiments.cli; dispatch through that one
    from experiments.cli import main as _main

    sys.exit(_main())
