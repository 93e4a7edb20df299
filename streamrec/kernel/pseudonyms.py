"""Pseudonymous user ids: with ``privacy.pseudonym_key`` set, ingestion replaces every user
id by ``pseudonym(user_id, key)`` before anything is stored or published, so Redis and the
topics streamrec writes hold pseudonyms only. Whoever holds the key and a raw id computes
the same pseudonym (the Python client does: ``pseudonym_key=``)."""

from __future__ import annotations

import hashlib
import hmac

HEX_CHARS = 32  # 128 bits of HMAC-SHA256: no collision among any realistic user base


def pseudonym(user_id: str, key: bytes) -> str:
    """The first 128 bits of HMAC-SHA256(key, user_id), as lowercase hex."""
    digest = hmac.new(key, user_id.encode("utf-8"), hashlib.sha256).hexdigest()
    return digest[:HEX_CHARS]
