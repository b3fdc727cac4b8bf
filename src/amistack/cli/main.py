"""The `amistack` command: one entry point, a sub-command per service or tool."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from amistack.cli.common import CliError

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="amistack",
        description="amistack: a secure smart-metering (AMI) system. "
        "Each sub-command has its own --help.",
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    from amistack.cli import commands

    commands.register_all(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler: Handler = args.handler
    try:
        return handler(args)
    except CliError as exc:
        print(f"amistack {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away (`amistack log show F | head`)
        sys.stderr.close()
        return 141
    finally:
        token = sys.modules.get("amistack.crypto.pkcs11_token")
        if token is not None:  # a PKCS#11 KEK or module was used: log out, unload the library
            token.close_all()


if __name__ == "__main__":
    sys.exit(main())
