"""Several hospitals in one simulator process, each with credentials of its own, for the
connection tests: the files the simulator reads (secrets, JWKS) and the ones our client
reads (the same secret, the private keys), all in one temporary folder."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from inventory.his.auth import TokenAuthConfig, public_jwk
from inventory.his.secrets import SecretSource
from inventory.simulators.his.process import SimProcess

#: Hospital id -> how its client authenticates.
METHODS = {
    "hosp-a": "client_secret_basic",
    "hosp-b": "private_key_jwt",  # RS384
    "hosp-c": "private_key_jwt",  # ES384
}


def new_key(algorithm: str) -> Any:
    """A fresh private key for RS384 (RSA 2048) or ES384 (P-384)."""
    if algorithm == "ES384":
        return ec.generate_private_key(ec.SECP384R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem(key: Any) -> bytes:
    """A private key as unencrypted PKCS#8 PEM."""
    data: bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return data


@dataclass
class Hospitals:
    """The folder of credentials and the simulator serving the hospitals."""

    directory: Path
    sim: SimProcess

    def secret_file(self, hospital: str) -> Path:
        """The client secret the simulator checks (ours is a copy: :meth:`our_secret`)."""
        return self.directory / f"sim-{hospital}-secret.txt"

    def our_secret(self, hospital: str) -> Path:
        """The client secret file our connection reads."""
        return self.directory / f"our-{hospital}-secret.txt"

    def our_key(self, hospital: str) -> Path:
        """Our private key file for the hospital."""
        return self.directory / f"our-{hospital}-key.pem"

    def jwks_file(self, hospital: str) -> Path:
        """The JWKS the simulator holds for the hospital's client."""
        return self.directory / f"sim-{hospital}-jwks.json"

    @staticmethod
    def algorithm(hospital: str) -> str:
        """The hospital's assertion algorithm."""
        return "ES384" if hospital == "hosp-c" else "RS384"

    def rotate_secret(self, hospital: str, *, ours: bool = True, theirs: bool = True) -> str:
        """A new client secret at the hospital and/or in our file; the new value."""
        value = secrets.token_urlsafe(24)
        if theirs:
            self.secret_file(hospital).write_text(value + "\n")
        if ours:
            self.our_secret(hospital).write_text(value + "\n")
        return value

    def rotate_key(self, hospital: str, *, keep_old: bool = True) -> None:
        """A new key pair: its public half added to the JWKS (the old one kept while
        ``keep_old``), our key file replaced."""
        key = new_key(self.algorithm(hospital))
        jwks = orjson.loads(self.jwks_file(hospital).read_bytes()) if keep_old else {"keys": []}
        jwks["keys"].append(public_jwk(key))
        self.jwks_file(hospital).write_bytes(orjson.dumps(jwks))
        self.our_key(hospital).write_bytes(pem(key))

    def auth_config(self, hospital: str, **overrides: Any) -> TokenAuthConfig:
        """Our client registration at the hospital (as a connections file gives it)."""
        method = overrides.pop("method", METHODS[hospital])
        values: dict[str, Any] = {
            "token_url": self.sim.token_url_of(hospital),
            "client_id": f"inventory-{hospital}",
            "method": method,
            "scope": "system/Schedule.rs system/Slot.rs system/Appointment.cruds",
        }
        if method == "private_key_jwt":
            values["private_key"] = SecretSource(file=self.our_key(hospital))
            values["algorithm"] = self.algorithm(hospital)
        else:
            values["secret"] = SecretSource(file=self.our_secret(hospital))
        values.update(overrides)
        return TokenAuthConfig(**values)


def write_hospitals(directory: Path, *, extra: dict[str, dict[str, Any]] | None = None) -> Path:
    """The simulator's hospitals file, the secrets and keys of ``METHODS``, and a
    hospital without credentials (``hosp-open``); returns the file."""
    entries: list[dict[str, Any]] = []
    for hospital, method in METHODS.items():
        entry: dict[str, Any] = {
            "id": hospital,
            "name": f"{hospital} 医院",
            "prefix": f"{hospital.removeprefix('hosp-')}-",
            "client_id": f"inventory-{hospital}",
        }
        if method == "private_key_jwt":
            algorithm = "ES384" if hospital == "hosp-c" else "RS384"
            key = new_key(algorithm)
            (directory / f"our-{hospital}-key.pem").write_bytes(pem(key))
            jwks = directory / f"sim-{hospital}-jwks.json"
            jwks.write_bytes(orjson.dumps({"keys": [public_jwk(key)]}))
            entry["jwks_file"] = jwks.name
        else:
            value = secrets.token_urlsafe(24)
            (directory / f"sim-{hospital}-secret.txt").write_text(value + "\n")
            (directory / f"our-{hospital}-secret.txt").write_text(value + "\n")
            entry["client_secret_file"] = f"sim-{hospital}-secret.txt"
        entry |= (extra or {}).get(hospital, {})
        entries.append(entry)
    entries.append({"id": "hosp-open", "prefix": "open-"})
    path = directory / "hospitals.json"
    path.write_bytes(orjson.dumps({"hospitals": entries}))
    return path


def start_hospitals(directory: Path, **sim_options: Any) -> Hospitals:
    """Write the credentials and start the simulator serving every hospital."""
    directory.mkdir(parents=True, exist_ok=True)
    path = write_hospitals(directory)
    sim = SimProcess(
        directory / "sim",
        seed_rng=11,
        extra_args=("--hospitals", str(path), "--days", "3"),
        hospitals=(*METHODS, "hosp-open"),
        **sim_options,
    )
    sim.start()
    return Hospitals(directory, sim)
