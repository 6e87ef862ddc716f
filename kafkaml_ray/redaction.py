"""What is secret, found by name and by value: settings, URLs and records are made safe
here before they reach a log, a lineage record, the Ray dashboard or an export.

>>> public_url("s3://AKIA:s3cret@bucket/kml/results/1/model.keras")
's3://AKIA:***@bucket/kml/results/1/model.keras'
>>> public_url("postgresql://kml@db/kml?sslmode=require&password=s3cret")
'postgresql://kml@db/kml?sslmode=require&password=***'
>>> redact({"db": "postgresql://kml:pw@db/kml", "api_key": "k", "n": [1, "x"]})
{'db': 'postgresql://kml:***@db/kml', 'api_key': '***', 'n': [1, 'x']}
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["public_url", "has_credentials", "redact", "is_secret_name", "REDACTED"]

REDACTED = "***"
#: names (of settings, keys, query parameters) whose values are secret
_SECRET_NAME = re.compile(
    r"pass(word|wd)?|secret|token|credential|api[_-]?key|private[_-]?key|access[_-]?key", re.I
)
_USERINFO = re.compile(r"(?P<head>[a-zA-Z][\w+.-]*://[^/@:?#]*):(?P<secret>[^/@?#]*)@")
_QUERY = re.compile(r"(?P<head>[?&](?P<name>[^=&#]+)=)(?P<value>[^&#]*)")


def is_secret_name(name: str) -> bool:
    """Whether a setting or key of this name holds a secret."""
    return bool(_SECRET_NAME.search(name))


def public_url(url: str) -> str:
    """``url`` with its password (``user:password@``) and the values of its secret query
    parameters (``?password=``, ``?secret_key=``) replaced by ``***``."""
    url = _USERINFO.sub(lambda m: f"{m['head']}:{REDACTED}@" if m["secret"] else m[0], url)
    return _QUERY.sub(
        lambda m: f"{m['head']}{REDACTED}" if is_secret_name(m["name"]) else m[0], url
    )


def has_credentials(url: str) -> bool:
    """Whether ``url`` holds a password or a secret query parameter."""
    return public_url(url) != url


def redact(value: Any) -> Any:
    """``value`` (dicts, lists, strings) with each entry whose key names a secret replaced
    by ``***``, and the credentials in every string taken out (`public_url`)."""
    if isinstance(value, dict):
        return {k: REDACTED if is_secret_name(str(k)) else redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, str) and "://" in value:
        return public_url(value)
    return value
