"""The Authorization header for RTSP and HTTP cameras: Basic or Digest (RFC 2617 / 7616, MD5), from a challenge.

Used by the MJPEG client and by the RTSP probe that turns a failed open into a clear error ("the camera
rejected the credentials"), so both speak what IP cameras ask for.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re

_PARAM = re.compile(r'(\w+)=(?:"([^"]*)"|([^\s,]+))')


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``'Digest realm="x", nonce="y"'`` → ``("digest", {"realm": "x", "nonce": "y"})``."""
    scheme, _, rest = header.strip().partition(" ")
    return scheme.lower(), {m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
                            for m in _PARAM.finditer(rest)}


def authorization(challenges: list[str], method: str, uri: str, user: str, password: str) -> str | None:
    """The header value answering the strongest challenge we speak (Digest before Basic); None if none."""
    parsed = [parse_challenge(c) for c in challenges]
    for scheme, params in parsed:
        if scheme == "digest" and params.get("algorithm", "MD5").upper() == "MD5" and "nonce" in params:
            return _digest(params, method, uri, user, password)
    for scheme, _params in parsed:
        if scheme == "basic":
            return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return None


def _md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def _digest(params: dict[str, str], method: str, uri: str, user: str, password: str) -> str:
    realm, nonce = params.get("realm", ""), params["nonce"]
    ha1 = _md5(f"{user}:{realm}:{password}")
    ha2 = _md5(f"{method}:{uri}")
    fields = [f'username="{user}"', f'realm="{realm}"', f'nonce="{nonce}"', f'uri="{uri}"']
    qops = [q.strip() for q in params.get("qop", "").split(",") if q.strip()]
    if "auth" in qops:
        cnonce, nc = os.urandom(8).hex(), "00000001"
        response = _md5(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")
        fields += ["qop=auth", f"nc={nc}", f'cnonce="{cnonce}"']
    else:
        response = _md5(f"{ha1}:{nonce}:{ha2}")
    fields.append(f'response="{response}"')
    if "opaque" in params:
        fields.append(f'opaque="{params["opaque"]}"')
    return "Digest " + ", ".join(fields)
