"""Mp1 client credentials of app instances: issue, hash, verify.

The platform stores only ``hash_secret(secret)`` (scrypt, random salt), never
the secret itself. ``new_credentials()`` issues a client id and secret when
MEPM instantiates an app (Mm5) or an operator adds one (``mep app add``);
the Mp1 token endpoint checks a presented secret with ``verify_secret``.
MEPM hashes the secret itself and sends only the hash over Mm5, which checks
its form with ``is_secret_hash``.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

__all__ = ["new_credentials", "hash_secret", "verify_secret", "is_secret_hash"]

_N, _R, _P = 2**14, 8, 1  # scrypt cost: ~20 ms per hash here, once per token request


def new_credentials(app_instance_id: str) -> tuple[str, str]:
    """A fresh (client id, client secret) for an app instance."""
    return f"{app_instance_id}.{secrets.token_hex(4)}", secrets.token_urlsafe(32)


def _derive(secret: str, salt: bytes) -> bytes:
    return hashlib.scrypt(secret.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)


def hash_secret(secret: str) -> str:
    """``scrypt$<salt>$<hash>`` (base64), safe to store."""
    salt = secrets.token_bytes(16)
    return "scrypt$" + base64.b64encode(salt).decode() + "$" + base64.b64encode(_derive(secret, salt)).decode()


def verify_secret(secret: str, stored: str) -> bool:
    """Constant-time check of ``secret`` against a ``hash_secret`` value."""
    try:
        kind, salt_b64, hash_b64 = stored.split("$")
        salt, want = base64.b64decode(salt_b64), base64.b64decode(hash_b64)
    except ValueError:
        return False
    return kind == "scrypt" and hmac.compare_digest(_derive(secret, salt), want)


def is_secret_hash(stored: str) -> bool:
    """True when ``stored`` has the form ``hash_secret`` writes (16-byte salt, 32-byte scrypt hash)."""
    try:
        kind, salt_b64, hash_b64 = stored.split("$")
        salt = base64.b64decode(salt_b64, validate=True)
        digest = base64.b64decode(hash_b64, validate=True)
    except ValueError:
        return False
    return kind == "scrypt" and len(salt) == 16 and len(digest) == 32
