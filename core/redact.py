"""Mask the secrets node URLs carry before a URL reaches a log line or an error message.

Hosted nodes put the API key in the URL: Infura ``https://mainnet.infura.io/v3/<KEY>`` and
``wss://mainnet.infura.io/ws/v3/<KEY>``, Alchemy ``https://eth-mainnet.g.alchemy.com/v2/<KEY>``,
QuickNode ``https://name.quiknode.pro/<TOKEN>/``, Ankr ``https://rpc.ankr.com/eth/<KEY>``, others a
query parameter (``?apikey=``, ``?dkey=``) or ``user:password@``. ``mask_url`` keeps what helps
to debug (scheme, host, port, the path's plain words) and replaces the rest with ``***``.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlsplit, urlunsplit

MASK = "***"

# a path segment that follows one of these is a key (Infura /v3/, /ws/v3/, Alchemy /v2/, ...)
_KEY_PREFIXES = {"v1", "v2", "v3", "v4", "key", "keys", "apikey", "api-key", "token"}
# a token that looks generated: long, from a key alphabet, with digits (or all hex)
_KEYLIKE = re.compile(r"^[A-Za-z0-9_\-.~]{16,}$")
_HEX = re.compile(r"^(0x)?[0-9a-fA-F]{16,}$")
_SECRET_PARAM = re.compile(r"key|token|secret|auth|pass|sig|credential|session", re.IGNORECASE)
_URL_IN_TEXT = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s'\"<>`]+")


def _looks_like_key(segment: str) -> bool:
    if _HEX.match(segment):
        return True
    if not _KEYLIKE.match(segment):
        return False
    has_digit = any(c.isdigit() for c in segment)
    has_upper = any(c.isupper() for c in segment)
    has_lower = any(c.islower() for c in segment)
    return has_digit or (has_upper and has_lower)


def _mask_path(path: str) -> str:
    segments = path.split("/")
    out = []
    after_prefix = False
    for segment in segments:
        if segment and (after_prefix or _looks_like_key(segment)):
            out.append(MASK)
        else:
            out.append(segment)
        after_prefix = segment.lower() in _KEY_PREFIXES
    return "/".join(out)


def _mask_query(query: str) -> str:
    if not query:
        return query
    pairs = parse_qsl(query, keep_blank_values=True)
    if not pairs:
        return MASK
    masked = [
        f"{name}={MASK if (_SECRET_PARAM.search(name) or _looks_like_key(value)) and value else value}"
        for name, value in pairs
    ]
    return "&".join(masked)


def mask_url(url: str) -> str:
    """``url`` with its keys, tokens and credentials replaced by ``***``; anything unparsable masked whole."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return MASK
    if not parts.scheme or not parts.netloc:
        return _mask_path(url) if "/" in url or _looks_like_key(url) else url
    host = ".".join(MASK if _looks_like_key(label) else label for label in host.split("."))
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    if "@" in parts.netloc:
        netloc = f"{MASK}@{netloc}"
    fragment = MASK if parts.fragment else ""
    return urlunsplit((parts.scheme, netloc, _mask_path(parts.path), _mask_query(parts.query), fragment))


def mask_urls_in(text: str) -> str:
    """``text`` with every URL in it masked (for exception messages that may quote a URL)."""
    return _URL_IN_TEXT.sub(lambda m: mask_url(m.group(0)), text)
