"""TLS client contexts that trust what the machine trusts, as the Go runner does.

Go's crypto/x509 verifies against the operating system's CA store; httpx and Python's defaults
would use certifi's bundle or OpenSSL's compiled-in paths, which miss a company proxy's CA and, on
some builds, every system CA. ``truststore`` gives the system store: on Linux it uses OpenSSL's
default paths when they hold certificates (``SSL_CERT_FILE`` and ``SSL_CERT_DIR`` replace them, as
they do for OpenSSL) and otherwise the distribution's bundle; elsewhere the platform's verifier.
"""

from __future__ import annotations

import ssl

import truststore


def system_trust_context() -> ssl.SSLContext:
    """A client context verifying servers against the system trust store."""
    return truststore.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
