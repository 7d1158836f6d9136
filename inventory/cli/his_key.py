"""`inventory his-key`: the key pair the platform signs its SMART Backend Services
assertions with, and the public JWKS a hospital registers for it.

    inventory his-key KEY_FILE                     # print the JWKS of an existing key
    inventory his-key --new RS384|ES384 KEY_FILE   # make a key (owner-only file), print its JWKS

The private key never leaves the file; only the public half is printed.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    """Add the ``his-key`` command."""
    parser = subparsers.add_parser(
        "his-key",
        help="make a SMART Backend Services key and print the JWKS a hospital registers",
    )
    parser.add_argument("key_file", help="the private key (PEM, PKCS#8)")
    parser.add_argument(
        "--new",
        choices=("RS384", "ES384"),
        help="make a new key for this algorithm (RSA 3072 or P-384); the file must not exist",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Print the public JWKS (exit 0); 2 when the file is missing, exists with --new, or
    is not a usable key."""
    import orjson
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    from inventory.his.auth import public_jwks

    path = Path(args.key_file)
    if args.new:
        key: Any = (
            ec.generate_private_key(ec.SECP384R1())
            if args.new == "ES384"
            else rsa.generate_private_key(public_exponent=65537, key_size=3072)
        )
        data = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        try:
            # O_EXCL: never overwrite a key in use; 0600: the owner only.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as error:
            print(f"inventory his-key: {path}: {error.strerror}", file=sys.stderr)
            return 2
        with os.fdopen(fd, "wb") as out:
            out.write(data)
    try:
        jwks = public_jwks(path.read_bytes())
    except OSError as error:
        print(f"inventory his-key: {path}: {error.strerror}", file=sys.stderr)
        return 2
    except (ValueError, TypeError) as error:
        print(f"inventory his-key: {path}: not a usable private key ({error})", file=sys.stderr)
        return 2
    print(orjson.dumps(jwks, option=orjson.OPT_INDENT_2).decode())
    return 0
