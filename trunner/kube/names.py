"""The API server's rules for names, label keys and label values (DNS-1123 labels and
subdomains, qualified names), as pure checks."""

from __future__ import annotations

import re

MAX_LABEL = 63
"""Longest DNS-1123 label, label name or label value."""
MAX_SUBDOMAIN = 253

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")


def is_dns_label(text: str) -> bool:
    return len(text) <= MAX_LABEL and _DNS_LABEL.fullmatch(text) is not None


def dns_label_problem(text: str) -> str | None:
    """Why ``text`` is not a DNS-1123 label, or None (a settings check)."""
    return None if is_dns_label(text) else "must be a DNS-1123 label (lower-case letters, digits, '-')"


def is_label_value(text: str) -> bool:
    return len(text) <= MAX_LABEL and _LABEL_VALUE.fullmatch(text) is not None


def label_key_problem(key: str) -> str | None:
    """Why ``key`` is not a valid label or annotation key (``[prefix/]name``), or None."""
    prefix, _, name = key.rpartition("/")
    if "/" in key and (len(prefix) > MAX_SUBDOMAIN or not _DNS_SUBDOMAIN.fullmatch(prefix)):
        return f"{key!r}: the prefix must be a DNS subdomain"
    if len(name) > MAX_LABEL or not _LABEL_NAME.fullmatch(name):
        return f"{key!r}: the name must be 1-63 letters, digits, '-', '_' or '.', starting and ending alphanumeric"
    return None


def is_dns_subdomain(text: str) -> bool:
    return len(text) <= MAX_SUBDOMAIN and _DNS_SUBDOMAIN.fullmatch(text) is not None
