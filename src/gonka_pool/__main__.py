"""``python -m gonka_pool COMMAND``: only dispatching.  The commands live in
``gonka_pool._cli``, one module per subcommand (see its docstring for what a
module offers); adding one is a line in ``COMMANDS``."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# Subcommand -> its module under gonka_pool._cli, in the order --help lists them.
COMMANDS = {
    "demo": "demo",
    "bench": "bench",
    "bench-failover": "bench_failover",
    "bench-scaleout": "bench_scaleout",
    "bench-balance": "bench_balance",
    "top": "top",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gonka_pool", description="gonka_pool from the command line: a demo, benchmarks, and top."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, title="commands", metavar="COMMAND")
    # Each command's own parser, not a pass-through: "bench --help" and a bad bench
    # option then come from argparse with bench's usage, and only its module defines
    # the options.
    commands = {}
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(f"gonka_pool._cli.{module_name}")
        command = module.configure(subparsers.add_parser(name, help=module.HELP, **module.PARSER_OPTIONS))
        commands[name] = (module, command)
    args = parser.parse_args(argv)
    module, command = commands[args.command]
    status: int = module.execute(command, args)
    return status


def _run() -> int:
    try:
        status = main()
        sys.stdout.flush()  # inside the try: a pipe's reader may be gone by now
        return status
    except BrokenPipeError:
        # The reader went away (`python -m gonka_pool demo | head`): stop quietly, as
        # the Python docs advise for SIGPIPE, pointing stdout at devnull so the
        # interpreter's final flush does not raise a second time.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(_run())
