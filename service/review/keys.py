"""Review keys: made at random, shown once, stored only as a SHA-256 digest.

A key looks like ``fgr_review_3q2...`` : the role is in it so a person can tell keys apart, and its
first ``PREFIX_LENGTH`` characters (stored in the clear) name it in lists and in the audit trail.
Looking a key up by its digest is safe against timing: the digest of a 256-bit random secret tells
an attacker nothing they could use to build another key.
"""

from __future__ import annotations

import hashlib
import secrets

from .tables import Role

KEY_MARK = "fgr"
# 32 random bytes: 256 bits, beyond guessing; token_urlsafe writes them in 43 characters.
KEY_RANDOM_BYTES = 32
# The mark, the role and 8 random characters: enough to tell a unit's keys apart, far too little to guess from.
PREFIX_RANDOM_CHARS = 8
# The secret that signs an upload tool's webhooks: 32 random bytes, as 64 hex characters.
WEBHOOK_SECRET_BYTES = 32


def new_key(role: Role) -> str:
    return f"{KEY_MARK}_{role.value}_{secrets.token_urlsafe(KEY_RANDOM_BYTES)}"


def key_prefix(key: str) -> str:
    mark, role, random_part = key.split("_", 2)  # the random part may itself hold "_"
    return f"{mark}_{role}_{random_part[:PREFIX_RANDOM_CHARS]}"


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def new_webhook_secret() -> str:
    return secrets.token_hex(WEBHOOK_SECRET_BYTES)
