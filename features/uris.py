"""URIs that name a service: the checks and the redaction shared by the settings
(``pipelines/sections.py``) and the trainers' config (``trainers/config.py``), which may not
import each other (docs/architecture.md). Pure functions of a string, standard library only.

A URI is stored (a run's ``config.json``, Dagster's run records, MLflow params) and printed, so
it must never carry a password: credentials belong in the environment (for MLflow
``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` or ``MLFLOW_TRACKING_TOKEN``).
:func:`redact_uri` is what every log line and message shows of a URI.
"""
from __future__ import annotations

import re
import urllib.parse

#: What :func:`redact_uri` puts in place of the user info and of the query string.
REDACTED = "***"
_URI_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]+")


def check_tracking_uri(uri: str | None) -> str | None:
    """``uri`` unchanged if it may be stored; ``ValueError`` (a message without the URI) if it
    is blank or holds a password (``http://user:secret@host``). ``None`` passes (the local store)."""
    if uri is None:
        return None
    if not uri.strip():
        raise ValueError("must not be empty (null: the local store under dir)")
    try:
        password = urllib.parse.urlsplit(uri).password
    except ValueError as exc:  # a malformed netloc ('http://[::1')
        raise ValueError(f"is not a valid URI ({exc})") from None
    if password is not None:
        raise ValueError(
            "holds a password, and the URI is stored in every run's config.json, in MLflow and in Dagster's run "
            "records: set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) instead"
        )
    return uri


def check_not_blank(value: str | None) -> str | None:
    """``value`` unchanged unless it is an empty or all-whitespace string (``ValueError``); ``None`` passes."""
    if value is not None and not value.strip():
        raise ValueError("must not be empty (leave it out or null for the default)")
    return value


def redact_uri(uri: str) -> str:
    """``uri`` as it may be shown: the user info (``user:password@``) and the query string
    replaced by :data:`REDACTED` (``http://me:pw@h:5000/x?token=t`` -> ``http://***@h:5000/x?***``),
    the fragment dropped; anything else (``sqlite:////abs/mlflow.db``) unchanged."""
    try:
        parts = urllib.parse.urlsplit(uri)
    except ValueError:  # malformed: cut by hand
        out = re.sub(r"//[^/?#]*@", f"//{REDACTED}@", uri)
        return out.split("?", 1)[0] + (f"?{REDACTED}" if "?" in out else "")
    if "@" not in parts.netloc and not parts.query and not parts.fragment:
        return uri  # nothing to hide: unchanged (urlunsplit would rewrite 'sqlite:////abs')
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rsplit('@', 1)[1]}"
    head = f"{parts.scheme}://{netloc}" if parts.netloc or uri[len(parts.scheme) + 1:].startswith("//") else f"{parts.scheme}:"
    return head + parts.path + (f"?{REDACTED}" if parts.query else "")

def redact_uris_in(text: str, *uris: str) -> str:
    """``text`` (an error message) with every ``scheme://...`` in it passed through
    :func:`redact_uri`, and the user info and query string of each of ``uris`` (the URI the
    message is about: a client may quote its parts on their own, ``url: /?token=...``) replaced
    by :data:`REDACTED` wherever they appear."""
    out = _URI_IN_TEXT.sub(lambda m: redact_uri(m.group(0)), text)
    for uri in uris:
        try:
            parts = urllib.parse.urlsplit(uri)
        except ValueError:
            continue
        if "@" in parts.netloc:
            out = out.replace(parts.netloc.rsplit("@", 1)[0] + "@", f"{REDACTED}@")
        if parts.query:
            out = out.replace(parts.query, REDACTED)
    return out
