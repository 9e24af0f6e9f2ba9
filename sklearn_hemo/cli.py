"""The ``sklearn-hemo`` command line: simulate, compare, train, predict.

Each sub-command lives in its own ``_add_<name>`` / ``_run_<name>`` pair below; the
heavy imports happen inside ``_run_<name>`` so that ``sklearn-hemo --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys


def _build_parser():
    parser = argparse.ArgumentParser(
        prog="sklearn-hemo",
        description="Voxel-wise prediction of hemorrhagic transformation from source PWI.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in _COMMANDS:
        add(sub)
    return parser


# -- simulate ------------------------------------------------------------------------
def _add_simulate(sub):
    p = sub.add_parser("simulate", help="write a simulated stroke cohort to OUT_DIR")
    p.add_argument("out_dir", metavar="OUT_DIR")
    p.set_defaults(func=_run_simulate)


def _run_simulate(args):
    raise SystemExit("simulate: not implemented yet")


_COMMANDS = [_add_simulate]


def main(argv=None):
    """Entry point of the ``sklearn-hemo`` console script."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from . import __version__

        print(__version__)
        return 0
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return args.func(args) or 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
