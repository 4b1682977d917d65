"""The API server's name rules: DNS-1123 labels, label values, label and annotation keys."""

from __future__ import annotations

import pytest

from trunner.kube.names import dns_label_problem, is_dns_label, is_label_value, label_key_problem


@pytest.mark.parametrize("text", ["a", "runner-0", "0", "a" * 63])
def test_dns_labels(text: str) -> None:
    assert is_dns_label(text) and dns_label_problem(text) is None


@pytest.mark.parametrize("text", ["", "A", "-a", "a-", "a.b", "a_b", "a" * 64])
def test_not_dns_labels(text: str) -> None:
    assert not is_dns_label(text)
    assert dns_label_problem(text) == "must be a DNS-1123 label (lower-case letters, digits, '-')"


@pytest.mark.parametrize("text", ["", "A", "a.B_c-1", "x" * 63])
def test_label_values(text: str) -> None:
    assert is_label_value(text)


@pytest.mark.parametrize("text", ["-a", "a_", "a b", "x" * 64])
def test_not_label_values(text: str) -> None:
    assert not is_label_value(text)


@pytest.mark.parametrize("key", ["app", "app.kubernetes.io/name", "a/B_c.d", "x" * 63, f"{'a' * 253}/n"])
def test_label_keys(key: str) -> None:
    assert label_key_problem(key) is None


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("/x", "the prefix must be a DNS subdomain"),
        ("Example.com/x", "the prefix must be a DNS subdomain"),
        (f"{'a' * 254}/x", "the prefix must be a DNS subdomain"),
        ("", "the name must be"),
        ("a/", "the name must be"),
        ("-x", "the name must be"),
        ("x" * 64, "the name must be"),
    ],
)
def test_bad_label_keys(key: str, problem: str) -> None:
    found = label_key_problem(key)
    assert found is not None and problem in found
