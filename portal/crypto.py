"""Secrets we must be able to read back (queued email bodies, TOTP seeds) are sealed
with Fernet under a key derived from SECRET_KEY and a purpose, so a database dump alone
gives neither, and one purpose's key opens nothing else."""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken

from portal.config import settings

__all__ = ["InvalidToken", "seal", "unseal"]


def _fernet(purpose: str) -> Fernet:
    secret = settings().SECRET_KEY.encode()
    key = hashlib.sha256(purpose.encode() + b"\x00" + secret).digest()
    return Fernet(base64.urlsafe_b64encode(key))


def seal(purpose: str, text: str) -> str:
    return _fernet(purpose).encrypt(text.encode()).decode("ascii")


def unseal(purpose: str, sealed: str) -> str:
    """The text; raises InvalidToken if SECRET_KEY has changed or the text was altered."""
    return _fernet(purpose).decrypt(sealed.encode("ascii")).decode()
