"""``minference`` command line: a thin layer over the library. Each sub-command lives with the code it drives."""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional, Sequence

SUBCOMMANDS = {
    # name: module exposing add_parser(subparsers); each parser sets a `run(args)` default
    "demo": "minference.evals.demo",
    "eval": "minference.evals.cli",
    "bench": "minference.bench.cli",
    "search": "minference.search.cli",
    "config": "minference.config_show",
    "convert": "minference.integrations.checkpoint",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minference", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module in SUBCOMMANDS.values():
        importlib.import_module(module).add_parser(subparsers)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
