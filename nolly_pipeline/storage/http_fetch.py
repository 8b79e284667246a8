"""Fetch an input over HTTP(S) from an allowlisted host without opening an SSRF hole.

A job row is written by the frontend, so its URL is attacker-controlled. Checking the host
name is not enough: an allowed name can resolve (or be re-pointed, between our check and the
connect) to 127.0.0.1, the cloud metadata service or the office LAN, and a public server can
redirect to any of those. So every hop is checked here: scheme, host on the allowlist, and
every address the name resolves to must be public; the connection then goes to the very
address that was checked (the URL is rewritten to the IP, with the original ``Host`` header
and TLS server name), so DNS cannot change the answer in between. Redirects are followed by
hand, each one re-checked, and the body is counted while it streams so an oversize answer is
cut off at the limit rather than after filling the disk.

Nothing here reads configuration: the allowlist and limits are constructor arguments, and
the only way to reach a loopback test server is ``allow_addresses_for_tests``, which no
environment variable or job field can set.

httpx is imported when a URL is fetched, not with this module: every download builds a
fetcher, but only a deployment that allows web inputs (``NOLLY_ALLOWED_INPUT_HOSTS``) uses
one, and httpx with its IDNA tables costs a run worker about 0.1 s to import.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Collection, Mapping
from urllib.parse import urljoin, urlsplit

from nolly_pipeline.errors import InputError, TransientError
from nolly_pipeline.storage.objects import Digest
from nolly_pipeline.storage.tls import tls_context
from nolly_pipeline.storage.urls import describe_url

if TYPE_CHECKING:
    import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# host, port -> the addresses a connection to it could use.
Resolver = Callable[[str, int], list[str]]

REDIRECT_STATUSES = (301, 302, 303, 307, 308)
# httpx.Timeout arguments, seconds.
DEFAULT_TIMEOUT = {"connect": 10.0, "read": 60.0, "write": 60.0, "pool": 10.0}
CHUNK_BYTES = 1 << 20

# Ranges Python's ``is_global`` still calls global but that reach internal hosts anyway:
# NAT64 and 6to4 embed an IPv4 address (which may be 127.0.0.1 or 10.x) in an IPv6 one.
_EMBEDDING_NETWORKS = tuple(
    ipaddress.ip_network(n) for n in ("64:ff9b::/96", "64:ff9b:1::/48", "2002::/16")
)


def system_resolver(host: str, port: int) -> list[str]:
    """Every address the system resolver returns for ``host``; failure is transient (DNS)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise TransientError(f"could not resolve input host {host}") from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def is_public_address(address: IPAddress) -> bool:
    """True for an address on the public internet; False for loopback, private, link-local,
    multicast, reserved and unspecified ranges, and for IPv6 forms that embed an IPv4 one."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return is_public_address(address.ipv4_mapped)
        if any(address in net for net in _EMBEDDING_NETWORKS):
            return False
    return address.is_global and not (address.is_multicast or address.is_reserved or address.is_unspecified)


@dataclass(frozen=True)
class FetchResult:
    size: int
    # The last URL fetched (after redirects), shown without its query string.
    final_url: str


class HttpFetcher:
    """Downloads one URL to a file under the rules in the module docstring."""

    def __init__(
        self,
        allowed_hosts: Collection[str],
        *,
        resolver: Resolver = system_resolver,
        max_redirects: int = 5,
        timeout: Mapping[str, float] = DEFAULT_TIMEOUT,
        max_seconds: float = 3600.0,
        allow_addresses_for_tests: Collection[str] = (),
    ) -> None:
        """``allow_addresses_for_tests`` exempts exact IPs (a local test server) from the
        public-address rule. Production code never passes it; tests pass ``{"127.0.0.1"}``."""
        self.allowed_hosts = frozenset(h.lower() for h in allowed_hosts)
        self.resolver = resolver
        self.max_redirects = max_redirects
        self.timeout = dict(timeout)
        self.max_seconds = max_seconds
        self._test_addresses = frozenset(ipaddress.ip_address(a) for a in allow_addresses_for_tests)

    def fetch(self, url: str, dest: Path, max_bytes: int, digest: Digest | None = None) -> FetchResult:
        """Stream ``url`` to ``dest``; raise InputError for anything refused, TransientError
        for failures worth retrying (5xx, 429, network). ``dest`` is removed on failure.
        ``digest`` is updated with the body's bytes as they are written."""
        import httpx

        deadline = time.monotonic() + self.max_seconds
        # trust_env=False: a proxy from the environment would resolve names itself.
        with httpx.Client(
            timeout=httpx.Timeout(**self.timeout), trust_env=False, follow_redirects=False, verify=tls_context()
        ) as client:
            for _ in range(self.max_redirects + 1):
                request = self._pinned_request(url)
                try:
                    with client.stream(request.method, request.url, headers=request.headers,
                                       extensions=request.extensions) as response:
                        if response.status_code in REDIRECT_STATUSES and "location" in response.headers:
                            url = urljoin(url, response.headers["location"])
                            continue
                        _check_status(response, url)
                        size = self._save(response, dest, max_bytes, deadline, digest)
                        return FetchResult(size=size, final_url=describe_url(url))
                except httpx.TransportError as exc:
                    dest.unlink(missing_ok=True)
                    raise TransientError(
                        f"fetching {describe_url(url)} failed: {type(exc).__name__}"
                    ) from None
        raise InputError(f"file_url redirected more than {self.max_redirects} times")

    def check_url(self, url: str) -> tuple[str, int, IPAddress]:
        """(host, port, address to connect to) for ``url``, or InputError saying why not."""
        parts = urlsplit(url)
        shown = describe_url(url)
        if parts.scheme not in ("http", "https"):
            raise InputError(f"refused to fetch {shown}: only http and https URLs are allowed")
        if parts.username is not None or parts.password is not None:
            raise InputError(f"refused to fetch {shown}: URLs with credentials are not allowed")
        host = (parts.hostname or "").lower()
        if host not in self.allowed_hosts:
            raise InputError(f"refused to fetch {shown}: host '{host}' is not an allowed input host")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise InputError(f"refused to fetch {shown}: invalid port") from None
        addresses = [ipaddress.ip_address(a) for a in self.resolver(host, port)]
        if not addresses:
            raise InputError(f"refused to fetch {shown}: host '{host}' has no address")
        for address in addresses:
            if not is_public_address(address) and address not in self._test_addresses:
                raise InputError(f"refused to fetch {shown}: host '{host}' resolves to a non-public address")
        return host, port, addresses[0]

    def _pinned_request(self, url: str) -> httpx.Request:
        """A GET for ``url`` that connects to the checked address, not to a fresh lookup."""
        import httpx

        host, port, address = self.check_url(url)
        parts = urlsplit(url)
        netloc = f"[{address}]" if address.version == 6 else str(address)
        default_port = 443 if parts.scheme == "https" else 80
        host_header = host if port == default_port else f"{host}:{port}"
        pinned = parts._replace(netloc=f"{netloc}:{port}").geturl()
        return httpx.Request(
            "GET",
            pinned,
            headers={"Host": host_header, "Accept-Encoding": "identity"},
            # TLS still verifies the certificate against the real host name.
            extensions={"sni_hostname": host},
        )

    def _save(
        self, response: httpx.Response, dest: Path, max_bytes: int, deadline: float, digest: Digest | None
    ) -> int:
        declared = response.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > max_bytes:
            raise too_large(int(declared), max_bytes)
        dest.parent.mkdir(parents=True, exist_ok=True)
        size = 0
        try:
            with open(dest, "wb") as fh:
                for chunk in response.iter_raw(CHUNK_BYTES):
                    size += len(chunk)
                    if size > max_bytes:
                        raise too_large(size, max_bytes, at_least=True)
                    if time.monotonic() > deadline:
                        raise InputError(f"fetching the input took longer than {self.max_seconds:g} s")
                    if digest is not None:
                        digest.update(chunk)
                    fh.write(chunk)
        except BaseException:
            dest.unlink(missing_ok=True)
            raise
        return size


def _check_status(response: httpx.Response, url: str) -> None:
    status = response.status_code
    if status == 429 or status >= 500:
        raise TransientError(f"fetching {describe_url(url)} failed with HTTP {status}")
    if status >= 300:
        raise InputError(f"fetching {describe_url(url)} failed with HTTP {status}")


def human_bytes(count: int) -> str:
    if count < 1024:
        return f"{count} bytes"
    value = float(count)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024:
            break
    return f"{value:.1f} {unit}"


def too_large(size: int, max_bytes: int, *, at_least: bool = False) -> InputError:
    """The error for an input over the size limit (shared with storage downloads)."""
    amount = f"more than {human_bytes(max_bytes)}" if at_least else human_bytes(size)
    return InputError(f"input is too large ({amount}); the limit is {human_bytes(max_bytes)}")
