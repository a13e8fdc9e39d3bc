"""Take secrets out of a config before it leaves the gateway in a support bundle.

Any key named like password / secret / key / token / credential (any case, any position: `password_file`,
`hmac_key_file`, `bindkey`, `api_token`) has its value replaced, and so does the password part of a
URL (`mqtt://user:pw@host`). Files that such keys point to are never read into the bundle. Only a
parsed document is redacted: text that does not parse is never guessed at (the bundle leaves it out).
"""

from __future__ import annotations

from typing import Any

from citynerve.gateway.logs import SECRET_KEY, URL_SECRET, is_secret_key, redact_urls

__all__ = ["REDACTED", "SECRET_KEY", "is_secret_key", "redact_config", "redact_value"]

REDACTED = URL_SECRET


def redact_value(value: Any) -> Any:
    """Strings lose URL passwords; containers are walked."""
    if isinstance(value, str):
        return redact_urls(value)
    if isinstance(value, list):
        return [redact_value(v) for v in value]
    if isinstance(value, dict):
        return redact_config(value)
    return value


def redact_config(data: dict[str, Any]) -> dict[str, Any]:
    """A copy of a parsed TOML document with every secret value replaced by "<redacted>"."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if is_secret_key(str(key)) and not isinstance(value, dict | bool):
            out[key] = REDACTED
        else:
            out[key] = redact_value(value)
    return out
