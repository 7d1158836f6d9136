"""`inventory token`: mint a bearer token from the configured key, for local use and
load tests."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from inventory.api.auth import mint_token
from inventory.ops.config import Settings


def register(subparsers: Any) -> None:
    """Add the ``token`` command."""
    parser = subparsers.add_parser("token", help="mint a bearer token (local use, load tests)")
    parser.add_argument("--sub", required=True, help="the account id the token names")
    parser.add_argument("--operator", action="store_true", help="grant the operator role")
    parser.add_argument(
        "--staff",
        action="store_true",
        help="grant the staff role: a check-in kiosk or the front desk (签到)",
    )
    parser.add_argument(
        "--hospital",
        action="append",
        dest="hospitals",
        metavar="HOSPITAL_ID",
        help="with --operator or --staff: this hospital only (repeat for more); without it"
        " the token reaches every hospital (the platform's)",
    )
    parser.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Print one token."""
    settings = Settings.from_env()
    try:
        print(
            mint_token(
                settings,
                args.sub,
                operator=args.operator,
                hospitals=args.hospitals,
                staff=args.staff,
                ttl_s=args.ttl,
            )
        )
    except ValueError as error:
        print(f"inventory token: {error}", file=sys.stderr)
        return 2
    return 0
