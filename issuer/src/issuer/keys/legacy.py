"""Legacy key files: the PEM files of releases before keys were sealed in the database.

At start, each file whose key's row has no private half yet is sealed into that row, then
every key file is deleted; a file that cannot be read is logged and kept (the repair check
then replaces its key); files of retired keys and orphans (a row that never committed) go.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import update

from issuer.db import Database, signing_keys
from issuer.kek import fsync_dir, seal_private_key
from issuer.keys import table
from issuer.keys.repair import report_unreadable
from jwt_verifier.jose import public_jwk

log = logging.getLogger("issuer.keys")


def import_key_files(database: Database, kek: bytes, key_dir: Path) -> list[str]:
    """Seal the PEM files in `key_dir` under `kek` into their rows, delete every key file; return the kids sealed."""
    rows = {row.kid: row for row in table.private_rows(database)}
    sealed: dict[str, bytes] = {}
    for path in sorted(key_dir.glob("*.pem")):
        row = rows.get(path.stem)
        if row is None or row.state == "retired" or row.private_key is not None:
            continue
        try:
            private_key = _load_pem(path, row.kid)
        except FileNotFoundError:
            continue  # another worker imported it just now (or the check finds it missing)
        except (OSError, ValueError, TypeError, UnsupportedAlgorithm) as exc:
            report_unreadable(row.kid, f"its key file cannot be imported: {exc}")
            continue
        sealed[row.kid] = seal_private_key(kek, row.kid, private_key)
    if sealed:
        with table.write(database) as conn:
            for kid, blob in sealed.items():
                conn.execute(
                    update(signing_keys)
                    .where(signing_keys.c.kid == kid, signing_keys.c.private_key.is_(None))
                    .where(signing_keys.c.state != "retired")
                    .values(private_key=blob)
                )
        for kid in sealed:
            log.info("key file imported into the database", extra={"fields": {"kid": kid}})
    _sweep(database, key_dir)
    return sorted(sealed)


def _sweep(database: Database, key_dir: Path) -> None:
    """Delete key files whose key is in the database, retired, or unknown (after the commit)."""
    rows = {row.kid: row for row in table.private_rows(database)}
    try:
        paths = list(key_dir.glob("*.pem"))
    except FileNotFoundError:  # workers starting together: another one swept and removed it meanwhile
        return
    for path in paths:
        row = rows.get(path.stem)
        if row is None or row.state == "retired" or row.private_key is not None:
            path.unlink(missing_ok=True)
            if row is None:
                log.info("orphaned key file deleted", extra={"fields": {"kid": path.stem}})
    # Workers starting together sweep together: the directory may be gone already.
    with contextlib.suppress(FileNotFoundError):
        fsync_dir(key_dir)
    with contextlib.suppress(OSError):
        key_dir.rmdir()  # only when empty; nothing is kept there any more
        fsync_dir(key_dir.parent)


def _load_pem(path: Path, kid: str) -> rsa.RSAPrivateKey:
    """Read an earlier release's key file: an unencrypted PKCS#8 PEM whose thumbprint is `kid`."""
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise TypeError("not an RSA private key")
    if public_jwk(key.public_key())["kid"] != kid:
        raise ValueError("the key in the file is not the key of its name")
    return key
