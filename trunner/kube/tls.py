"""TLS for the API server from a :class:`KubeConfig`: trusted CA, verification, client cert."""

from __future__ import annotations

import os
import ssl
import tempfile
from pathlib import Path

from trunner.kube.config import KubeConfig
from trunner.kube.errors import KubeConfigError
from trunner.net.tls import system_trust_context


def load_client_certificate(context: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    """``ssl`` loads certificate chains from files only: write both to a private temporary
    directory, load them, and remove them at once."""
    with tempfile.TemporaryDirectory(prefix="trunner-tls-") as folder:
        cert_path = Path(folder) / "client.crt"
        key_path = Path(folder) / "client.key"
        for path, data in ((cert_path, cert_pem), (key_path, key_pem)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
        context.load_cert_chain(cert_path, key_path)


def ssl_context(config: KubeConfig) -> ssl.SSLContext:
    """The client TLS context; problems with the material are a :class:`KubeConfigError`."""
    try:
        if config.ca_pem is not None:
            context = ssl.create_default_context(cadata=config.ca_pem.decode("ascii", "replace"))
        else:
            # No CA configured: the system trust store, as client-go uses.
            context = system_trust_context()
    except ssl.SSLError as exc:
        raise KubeConfigError(config.source, f"certificate authority is not valid PEM: {exc}") from None
    if config.insecure_skip_tls_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if config.client_cert_pem is not None and config.client_key_pem is not None:
        try:
            load_client_certificate(context, config.client_cert_pem, config.client_key_pem)
        except ssl.SSLError as exc:
            raise KubeConfigError(
                config.source, f"client certificate/key are not a valid PEM pair: {exc}"
            ) from None
    return context
