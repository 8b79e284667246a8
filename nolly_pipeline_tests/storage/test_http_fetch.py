"""HttpFetcher against a real local HTTP server: allowlist, resolved-address checks on every
redirect hop, pinned connections, size limits while streaming.

The server listens on 127.0.0.1, which production refuses; these tests reach it only
through the explicit ``allow_addresses_for_tests`` hatch and a fake resolver that maps
made-up names to addresses. The default (no hatch) is tested to refuse it.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Iterator

import pytest

from nolly_pipeline.errors import InputError, TransientError
from nolly_pipeline.storage.http_fetch import HttpFetcher, is_public_address
from nolly_pipeline_tests.http_server import ENDLESS_BYTES, TEST_DNS, TEST_HOSTS, LocalServer, fake_resolver

@pytest.fixture
def server() -> Iterator[LocalServer]:
    with LocalServer() as s:
        s.files["/clip.mp4"] = b"clip-bytes"
        yield s


@pytest.fixture
def fetcher() -> HttpFetcher:
    """The test fetcher: fake names, and the one hatch to the local server's address."""
    return HttpFetcher(
        TEST_HOSTS, resolver=fake_resolver(TEST_DNS), allow_addresses_for_tests=["127.0.0.1"], max_redirects=3
    )


def test_fetches_an_allowed_host_through_the_checked_address(
    fetcher: HttpFetcher, server: LocalServer, tmp_path: Path
) -> None:
    dest = tmp_path / "in" / "clip.mp4"
    result = fetcher.fetch(server.url("/clip.mp4?sig=secret"), dest, max_bytes=100)
    assert dest.read_bytes() == b"clip-bytes" and result.size == 10
    assert result.final_url == server.url("/clip.mp4")  # shown without the query string
    assert server.hosts == [f"media.test:{server.port}"]  # the name travels in Host, not DNS


def test_follows_relative_and_absolute_redirects(fetcher: HttpFetcher, server: LocalServer, tmp_path: Path) -> None:
    hop2 = server.url("/redirect?to=/clip.mp4")
    result = fetcher.fetch(server.url(f"/redirect?to={hop2}"), tmp_path / "a", max_bytes=100)
    assert result.size == 10 and result.final_url == server.url("/clip.mp4")


def test_the_default_fetcher_refuses_loopback(server: LocalServer, tmp_path: Path) -> None:
    """No hatch: an allowed name that resolves to 127.0.0.1 is refused, real DNS or not."""
    for fetcher in (
        HttpFetcher(["localhost"]),
        HttpFetcher(["media.test"], resolver=fake_resolver(TEST_DNS)),
    ):
        host = next(iter(fetcher.allowed_hosts))
        with pytest.raises(InputError, match="resolves to a non-public address"):
            fetcher.fetch(server.url("/clip.mp4", host=host), tmp_path / "x", max_bytes=100)
    assert server.hosts == []  # never connected


@pytest.mark.parametrize(
    "url, fragment",
    [
        ("http://meta.test/latest/meta-data/", "resolves to a non-public address"),
        ("http://lan.test/a.mp4", "resolves to a non-public address"),
        ("http://ten.test/a.mp4", "resolves to a non-public address"),
        ("http://loop2.test/a.mp4", "resolves to a non-public address"),  # hatch is exact, not 127/8
        ("http://v6loop.test/a.mp4", "resolves to a non-public address"),
        ("http://mapped.test/a.mp4", "resolves to a non-public address"),
        ("http://mixed.test/a.mp4", "resolves to a non-public address"),  # any private answer counts
        ("http://empty.test/a.mp4", "has no address"),
        ("http://127.0.0.1/a.mp4", "host '127.0.0.1' is not an allowed input host"),
        ("http://[::1]/a.mp4", "host '::1' is not an allowed input host"),
        ("http://169.254.169.254/latest", "is not an allowed input host"),
        ("http://evil.example.com/a.mp4", "host 'evil.example.com' is not an allowed input host"),
        ("http://media.test.evil.com/a.mp4", "is not an allowed input host"),
        ("file:///etc/passwd", "only http and https"),
        ("gopher://media.test/a", "only http and https"),
        ("https://user:pw@media.test/a.mp4", "credentials are not allowed"),
        ("http://media.test:99999/a.mp4", "invalid port"),
    ],
)
def test_refused_targets(fetcher: HttpFetcher, tmp_path: Path, url: str, fragment: str) -> None:
    with pytest.raises(InputError, match=fragment) as err:
        fetcher.fetch(url, tmp_path / "x", max_bytes=100)
    assert "pw" not in err.value.message


@pytest.mark.parametrize(
    "target, fragment",
    [
        ("http://169.254.169.254/latest/meta-data/", "is not an allowed input host"),
        ("http://meta.test/latest/meta-data/", "resolves to a non-public address"),
        ("http://lan.test/a.mp4", "resolves to a non-public address"),
        ("http://v6loop.test/a.mp4", "resolves to a non-public address"),
        ("file:///etc/passwd", "only http and https"),
        ("s3://vfx-assets/u/a.mp4", "only http and https"),
        ("http://evil.example.com/a.mp4", "is not an allowed input host"),
    ],
)
def test_redirects_are_checked_like_the_first_hop(
    fetcher: HttpFetcher, server: LocalServer, tmp_path: Path, target: str, fragment: str
) -> None:
    with pytest.raises(InputError, match=fragment):
        fetcher.fetch(server.url(f"/redirect?to={target}"), tmp_path / "x", max_bytes=100)
    assert len(server.hosts) == 1  # the redirect itself, and nothing after it


def test_redirect_loops_stop(fetcher: HttpFetcher, server: LocalServer, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="redirected more than 3 times"):
        fetcher.fetch(server.url("/loop"), tmp_path / "x", max_bytes=100)
    assert len(server.hosts) == 4


def test_declared_length_over_the_limit_is_refused_before_reading(
    fetcher: HttpFetcher, server: LocalServer, tmp_path: Path
) -> None:
    dest = tmp_path / "x"
    with pytest.raises(InputError, match=r"input is too large \(10.0 GiB\); the limit is 1.0 MiB"):
        fetcher.fetch(server.url("/declared-huge"), dest, max_bytes=1024 * 1024)
    assert not dest.exists()


def test_undeclared_stream_is_cut_off_at_the_limit(fetcher: HttpFetcher, server: LocalServer, tmp_path: Path) -> None:
    dest = tmp_path / "x"
    with pytest.raises(InputError, match=r"input is too large \(more than 1.0 MiB\)"):
        fetcher.fetch(server.url("/endless"), dest, max_bytes=1024 * 1024)
    assert not dest.exists()
    assert server.sent < ENDLESS_BYTES  # the server saw the hang-up long before its own end


@pytest.mark.parametrize("status, error", [(404, InputError), (403, InputError), (503, TransientError), (429, TransientError)])
def test_http_errors(fetcher: HttpFetcher, server: LocalServer, tmp_path: Path, status: int, error: type) -> None:
    with pytest.raises(error, match=f"failed with HTTP {status}"):
        fetcher.fetch(server.url(f"/status/{status}"), tmp_path / "x", max_bytes=100)


def test_connection_failure_is_transient(fetcher: HttpFetcher, tmp_path: Path) -> None:
    with LocalServer() as gone:
        port = gone.port
    with pytest.raises(TransientError, match="ConnectError"):
        fetcher.fetch(f"http://media.test:{port}/a.mp4", tmp_path / "x", max_bytes=100)


def test_requests_are_pinned_to_the_checked_address() -> None:
    """The connection goes to the IP that was checked; TLS still verifies the real name."""
    calls: list[str] = []

    def resolve(host: str, port: int) -> list[str]:
        calls.append(host)
        return {"cdn.test": ["93.184.216.34"], "v6.test": ["2606:4700::1111"]}[host]

    fetcher = HttpFetcher(["cdn.test", "v6.test"], resolver=resolve)
    request = fetcher._pinned_request("https://cdn.test/path/a.mp4?sig=1")
    assert str(request.url) == "https://93.184.216.34/path/a.mp4?sig=1"
    assert request.headers["Host"] == "cdn.test" and request.extensions["sni_hostname"] == "cdn.test"
    request = fetcher._pinned_request("http://v6.test:8080/a.mp4")
    assert request.url.host == "2606:4700::1111" and request.url.port == 8080
    assert request.headers["Host"] == "v6.test:8080"
    assert calls == ["cdn.test", "v6.test"]  # one lookup per request: nothing left to rebind


@pytest.mark.parametrize(
    "address, public",
    [
        ("93.184.216.34", True), ("8.8.8.8", True), ("2606:4700::1111", True),
        ("127.0.0.1", False), ("10.1.2.3", False), ("172.16.0.1", False), ("172.31.255.255", False),
        ("192.168.0.1", False), ("169.254.169.254", False), ("100.64.0.1", False), ("0.0.0.0", False),
        ("224.0.0.1", False), ("255.255.255.255", False), ("::1", False), ("::", False),
        ("fc00::1", False), ("fd12:3456::1", False), ("fe80::1", False), ("ff02::1", False),
        ("::ffff:127.0.0.1", False), ("::ffff:10.0.0.1", False),
        ("64:ff9b::7f00:1", False), ("2002:7f00:1::1", False),
    ],
)
def test_public_address_classification(address: str, public: bool) -> None:
    assert is_public_address(ipaddress.ip_address(address)) is public
