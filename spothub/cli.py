"""The `spothub` command. Sub-commands arrive with the capabilities they drive."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from spothub import __version__


def _summary(args: argparse.Namespace) -> int:
    from spothub.assembly_summary import render, summarize  # noqa: PLC0415 (keeps --help fast)

    try:
        print(render(summarize(Path(args.cdk_out))), end="")
    except FileNotFoundError as exc:
        print(f"spothub: {exc}", file=sys.stderr)
        return 2
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spothub",
        description="spothub: keep GPU work on the cheapest spot capacity across AWS regions.",
    )
    parser.add_argument("--version", action="version", version=f"spothub {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    summary = commands.add_parser(
        "summary", help="summarize a synthesized cloud assembly: stacks, regions, resources, API routes"
    )
    summary.add_argument("--cdk-out", default="cdk.out", help="the cloud assembly directory (default: cdk.out)")
    summary.set_defaults(handler=_summary)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 0
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
