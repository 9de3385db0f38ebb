"""Where ``pull`` may download from, and how much: the policy every transfer is checked against.

* **Hosts.** A URL's host must be one of the catalog's download hosts (its variants' URL hosts
  and its ``download_hosts``, where those redirect to) or match an entry of
  ``system_settings.pull_allowed_hosts``: ``name`` (that host), ``.example.com`` or
  ``*.example.com`` (the domain and its subdomains), an IP address, a CIDR range, or ``*`` (any
  host). Anything else is refused with ``403 permission_denied`` before a request is made.
* **Loopback, private, link-local and other non-public addresses** are refused unless the
  setting names them explicitly (the host's name, the address or a range holding it; ``*`` and
  the catalog do not count). That holds for an address in the URL and for every address a name
  resolves to when the connection is made, so a public-looking name that resolves to 127.0.0.1
  is refused too.
* **Redirects** are followed by hand, at most ``MAX_REDIRECTS``, each hop checked like the first
  URL: to the same host, or to another allowed one; never from https to http.
* **Size.** A transfer stops at the catalog's size for the file when it has one, else at
  ``system_settings.pull_max_size`` (default 64 GiB), whether or not the server sends a
  ``Content-Length``.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from llamahomed.core.errors import PermissionDenied

if TYPE_CHECKING:
    from llamahomed.core.settings import Settings
    from llamahomed.registry.catalog import Catalog

__all__ = ["DEFAULT_MAX_BYTES", "MAX_REDIRECTS", "SETTING", "PullPolicy", "PullRefused"]

MAX_REDIRECTS = 5
DEFAULT_MAX_BYTES = 64 << 30
SETTING = "system_settings.pull_allowed_hosts"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class PullRefused(PermissionDenied):
    """The pull policy does not allow this URL, redirect or address (403)."""


def _network(value: str) -> Network | None:
    try:
        return ipaddress.ip_network(value.strip("[]"), strict=False)
    except ValueError:
        return None


def _address(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _host_matches(entry: str, host: str) -> bool:
    if entry.startswith("."):
        return host == entry[1:] or host.endswith(entry)
    return host == entry


@dataclass(frozen=True)
class PullPolicy:
    """What a pull may fetch: ``catalog_hosts`` (public addresses only) plus ``allowed`` (the
    setting's entries); at most ``max_bytes`` per file."""

    catalog_hosts: frozenset[str] = frozenset()
    allowed: tuple[str, ...] = ()
    max_bytes: int = DEFAULT_MAX_BYTES
    max_redirects: int = MAX_REDIRECTS

    @classmethod
    def from_settings(cls, settings: Settings, catalog: Catalog) -> PullPolicy:
        system = settings.system_settings
        return cls(frozenset(catalog.download_hosts()), tuple(system.pull_allowed_hosts),
                   system.pull_max_size_bytes)

    @classmethod
    def default(cls) -> PullPolicy:
        """The built-in catalog's hosts, the default size limit: what a bare ``download`` gets."""
        from llamahomed.registry.catalog import Catalog

        return cls(frozenset(Catalog.load().download_hosts()))

    def limit(self, known_size: int | None) -> int:
        """Most bytes a file may have: the catalog's size when it knows one, else ``max_bytes``."""
        return min(known_size, self.max_bytes) if known_size else self.max_bytes

    # --- hosts ---------------------------------------------------------------------------

    def _named(self, host: str) -> bool:
        """The setting names this host (or a range holding its address) explicitly."""
        address = _address(host)
        for entry in self.allowed:
            if entry == "*":
                continue
            network = _network(entry)
            if network is not None:
                if address is not None and address in network:
                    return True
            elif address is None and _host_matches(entry, host):
                return True
        return False

    def _listed(self, host: str) -> bool:
        if self._named(host) or "*" in self.allowed:
            return True
        return _address(host) is None and any(_host_matches(e, host) for e in self.catalog_hosts)

    def check_url(self, url: str) -> None:
        """Refuse (``PullRefused``) a URL this policy does not allow; no request is made."""
        parts = urlsplit(url)
        host = (parts.hostname or "").lower().rstrip(".")
        if parts.scheme.lower() not in ("http", "https") or not host:
            raise PullRefused(f"only http:// and https:// URLs can be pulled, not {url!r}",
                              details={"url": url})
        if not self._listed(host):
            hosts = ", ".join(sorted(self.catalog_hosts)) or "none"
            raise PullRefused(
                f"pulls from {host} are not allowed: allowed are the catalog's hosts ({hosts}) "
                f"and those listed in {SETTING}", details={"url": url, "host": host,
                                                           "setting": SETTING})
        address = _address(host)
        if address is not None and not address.is_global and not self._named(host):
            raise _private(host, url)

    def check_redirect(self, current: str, location: str) -> None:
        """A hop from ``current`` to ``location``: same host or another allowed one; no downgrade."""
        before, after = urlsplit(current), urlsplit(location)
        if before.scheme.lower() == "https" and after.scheme.lower() != "https":
            raise PullRefused(f"{before.hostname} redirected the pull from https to "
                              f"{after.scheme or 'no scheme'}: refused", details={"url": current})
        if (after.hostname or "").lower() != (before.hostname or "").lower():
            try:
                self.check_url(location)
            except PullRefused as exc:
                raise PullRefused(f"{before.hostname} redirected the pull to {after.hostname}: "
                                  f"{exc.message}", details={**exc.details, "url": current}) from exc
        else:
            self.check_url(location)

    def allows_address(self, host: str, address: str) -> bool:
        """Whether a connection to ``host`` may go to ``address`` (one it resolved to)."""
        ip = _address(address.split("%", 1)[0])
        if ip is None:
            return False
        if ip.is_global or self._named(host.lower().rstrip(".")):
            return True
        return any(net is not None and ip in net for net in map(_network, self.allowed))

    def resolver(self) -> AbstractResolver:
        """A resolver for the download's connector: drops addresses this policy refuses."""
        return _GuardedResolver(self)


def _private(host: str, url: str, resolved: bool = False) -> PullRefused:
    how = "resolves to" if resolved else "is"
    return PullRefused(
        f"{host} {how} a loopback, private or otherwise non-public address; pulls from it need "
        f"it listed in {SETTING}", details={"url": url, "host": host, "setting": SETTING})


class _GuardedResolver(AbstractResolver):
    def __init__(self, policy: PullPolicy) -> None:
        self.policy = policy
        self.inner = DefaultResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        results = await self.inner.resolve(host, port, family)
        kept = [r for r in results if self.policy.allows_address(host, r["host"])]
        if not kept:
            raise _private(host, host, resolved=True)
        return kept

    async def close(self) -> None:
        await self.inner.close()

