"""HTTP proxies chosen as Go's ``net/http.ProxyFromEnvironment`` chooses them.

``HTTPS_PROXY`` serves ``https://`` URLs and ``HTTP_PROXY`` ``http://`` URLs (the upper-case name
wins over the lower-case one; no fallback from one to the other, no ``ALL_PROXY``). A proxy
without a scheme is ``http://``. ``NO_PROXY`` is a comma-separated list of ``*``, IP addresses,
CIDR ranges, domains (``example.com`` also matches its subdomains, ``.example.com`` and
``*.example.com`` only them), each optionally with ``:port``. ``localhost`` and loopback addresses
never go through a proxy.

A proxy is used through a ``CONNECT`` tunnel for ``https://`` targets and by absolute-form requests
for ``http://`` ones; userinfo in the proxy URL becomes ``Proxy-Authorization: Basic``.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import os
import ssl
from collections.abc import Mapping
from urllib.parse import unquote, urlsplit

import attrs
import h11
import httpx
import trio

SCHEMES = ("http", "https")
MAX_CONNECT_ANSWER = 16 * 1024


class ProxyError(ValueError):
    """A proxy setting that cannot be used, or a proxy that refused the tunnel."""


@attrs.frozen
class Proxy:
    url: str
    """``scheme://host:port`` without userinfo."""
    host: str
    port: int
    tls: bool
    authorization: str | None = None
    """The ``Proxy-Authorization`` value from the URL's userinfo."""

    @property
    def headers(self) -> dict[str, str]:
        return {"Proxy-Authorization": self.authorization} if self.authorization else {}

    def describe(self) -> str:
        return self.url


def parse_proxy(value: str, origin: str) -> Proxy:
    """``value`` as Go parses a proxy setting: a bare ``host:port`` is ``http://host:port``."""
    text = value.strip()
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme.startswith("socks"):
        raise ProxyError(f"{origin}: SOCKS proxies are not supported ({scheme}://); use an HTTP(S) proxy")
    if scheme not in SCHEMES:
        raise ProxyError(f"{origin}: proxy scheme must be http or https, not {scheme!r}")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError as exc:
        raise ProxyError(f"{origin}: {exc}") from None
    host = parts.hostname or ""
    if not host:
        raise ProxyError(f"{origin}: the proxy URL names no host")
    authorization = None
    if parts.username is not None:
        credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        authorization = "Basic " + base64.b64encode(credentials.encode()).decode()
    shown = f"[{host}]" if ":" in host else host
    return Proxy(
        url=f"{scheme}://{shown}:{port}",
        host=host,
        port=port,
        tls=scheme == "https",
        authorization=authorization,
    )


@attrs.frozen
class _Match:
    host: str = ""
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    port: str = ""
    match_host: bool = False


@attrs.frozen
class ProxyEnvironment:
    """The proxy settings of one environment; :meth:`proxy_for` picks the proxy for a URL."""

    http: Proxy | None = None
    https: Proxy | None = None
    no_proxy_all: bool = False
    ip_matches: tuple[_Match, ...] = ()
    domain_matches: tuple[_Match, ...] = ()

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> ProxyEnvironment:
        """Raises :class:`ProxyError` for a proxy variable that names no usable proxy."""

        def read(*names: str) -> tuple[str, str]:
            for name in names:
                if environ.get(name):
                    return name, environ[name]
            return names[0], ""

        http_name, http_value = read("HTTP_PROXY", "http_proxy")
        https_name, https_value = read("HTTPS_PROXY", "https_proxy")
        _, no_proxy = read("NO_PROXY", "no_proxy")
        ip_matches: list[_Match] = []
        domain_matches: list[_Match] = []
        for raw in no_proxy.split(","):
            entry = raw.strip().lower()
            if not entry:
                continue
            if entry == "*":
                return cls(
                    http=parse_proxy(http_value, http_name) if http_value else None,
                    https=parse_proxy(https_value, https_name) if https_value else None,
                    no_proxy_all=True,
                )
            if "/" in entry:
                with contextlib.suppress(ValueError):
                    ip_matches.append(_Match(network=ipaddress.ip_network(entry, strict=False)))
                continue
            host, port = _split_host_port(entry)
            if not host:
                continue
            try:
                address = ipaddress.ip_address(host)
            except ValueError:
                pass
            else:
                ip_matches.append(_Match(host=address.compressed, port=port))
                continue
            if host.startswith("*."):
                host = host[1:]
            match_host = not host.startswith(".")
            if match_host:
                host = "." + host
            domain_matches.append(_Match(host=host, port=port, match_host=match_host))
        return cls(
            http=parse_proxy(http_value, http_name) if http_value else None,
            https=parse_proxy(https_value, https_name) if https_value else None,
            ip_matches=tuple(ip_matches),
            domain_matches=tuple(domain_matches),
        )

    def proxy_for(self, url: str) -> Proxy | None:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        proxy = self.https if scheme in ("https", "wss") else self.http if scheme in ("http", "ws") else None
        if proxy is None or self.no_proxy_all:
            return None
        host = (parts.hostname or "").lower()
        port = str(parts.port or (443 if scheme in ("https", "wss") else 80))
        return proxy if self._use_proxy(host, port) else None

    def _use_proxy(self, host: str, port: str) -> bool:
        if not host:
            return True
        if host == "localhost":
            return False
        try:
            address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
        except ValueError:
            address = None
        if address is not None:
            if address.is_loopback:
                return False
            for m in self.ip_matches:
                if m.network is not None:
                    if address in m.network:
                        return False
                elif ipaddress.ip_address(m.host) == address and m.port in ("", port):
                    return False
            return True
        for m in self.domain_matches:
            if (host.endswith(m.host) or (m.match_host and host == m.host[1:])) and m.port in ("", port):
                return False
        return True


def _split_host_port(entry: str) -> tuple[str, str]:
    if entry.startswith("["):
        end = entry.find("]")
        if end < 0:
            return entry, ""
        rest = entry[end + 1 :]
        return entry[1:end], rest[1:] if rest.startswith(":") else ""
    if entry.count(":") == 1:
        host, port = entry.split(":")
        return host, port
    return entry, ""


def proxy_for(url: str, environ: Mapping[str, str] | None = None) -> Proxy | None:
    """The proxy the environment (the process's by default) gives for ``url``, or ``None`` to
    connect directly."""
    return ProxyEnvironment.from_environ(os.environ if environ is None else environ).proxy_for(url)


def httpx_proxy(proxy: Proxy | None, proxy_tls: ssl.SSLContext | None = None) -> httpx.Proxy | None:
    """``proxy`` for httpx's ``proxy=``: credentials as a header, TLS to the proxy verified with
    ``proxy_tls``."""
    if proxy is None:
        return None
    return httpx.Proxy(proxy.url, headers=proxy.headers, ssl_context=proxy_tls if proxy.tls else None)


async def open_tunnel(
    proxy: Proxy, host: str, port: int, *, proxy_tls: ssl.SSLContext | None = None
) -> trio.abc.Stream:
    """A stream to ``host:port`` through ``proxy`` (``CONNECT``); TLS to an ``https://`` proxy
    with ``proxy_tls``. Raises :class:`ProxyError` when the proxy answers other than 2xx and
    ``OSError``/``trio.BrokenResourceError`` for connection failures. The caller bounds the time."""
    sock = await trio.open_tcp_stream(proxy.host, proxy.port)
    stream: trio.abc.Stream = sock
    try:
        if proxy.tls:
            tls_stream = trio.SSLStream(
                sock, proxy_tls or ssl.create_default_context(), server_hostname=proxy.host
            )
            await tls_stream.do_handshake()
            stream = tls_stream
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_CONNECT_ANSWER)
        headers = [("Host", authority), *proxy.headers.items()]
        await stream.send_all(conn.send(h11.Request(method="CONNECT", target=authority, headers=headers)))
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(MAX_CONNECT_ANSWER)
                if not data:
                    raise ProxyError(
                        f"proxy {proxy.describe()} closed the connection before answering CONNECT"
                    )
                conn.receive_data(bytes(data))
                continue
            if isinstance(event, h11.Response):
                if not 200 <= event.status_code < 300:
                    reason = event.reason.decode("latin-1", "replace")
                    raise ProxyError(
                        f"proxy {proxy.describe()} refused CONNECT {authority}: {event.status_code} {reason}".rstrip()
                    )
                if conn.trailing_data[0]:
                    raise ProxyError(f"proxy {proxy.describe()} sent data before the tunnel was open")
                return stream
            if isinstance(event, h11.InformationalResponse):
                continue
            raise ProxyError(f"proxy {proxy.describe()} answered CONNECT with {type(event).__name__}")
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
