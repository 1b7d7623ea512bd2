"""Where webhooks may go: the SSRF policy.

A webhook URL is chosen by whoever holds an API key, and the deliverer runs inside the cluster:
without a policy it would POST to the cluster's own services or the cloud's metadata endpoint for
them. So destinations must be public addresses, checked at registration (to tell the user early)
and again at connect time against the very address connected to (``transport``), since DNS can
answer differently later. ``allow_private`` (webhook_allow_private) opens loopback and private
networks for a receiver on the LAN; metadata addresses stay closed whatever it says.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from urllib.parse import urlsplit

IP = ipaddress.IPv4Address | ipaddress.IPv6Address

METADATA = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254",  # AWS, GCP, Azure, OpenStack
    "fd00:ec2::254",  # AWS over IPv6
    "169.254.170.2",  # AWS ECS task metadata
    "100.100.100.200",  # Alibaba Cloud
))
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class UnsafeDestination(ValueError):
    """A webhook URL or address the policy refuses; the message says why."""


class InvalidUrl(UnsafeDestination):
    """Not a URL a webhook can have at all (not http(s), no host, credentials, control
    characters), before any question of where it points."""


def _embedded_v4(ip: IP) -> IP:
    """The IPv4 address inside an IPv6 form of it (mapped, NAT64, 6to4), else ``ip``."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip in _NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if ip.sixtofour is not None:
            return ip.sixtofour
    return ip


def refusal(address: str | IP, *, allow_private: bool = False) -> str | None:
    """Why the policy refuses to connect to ``address``, or None when it may."""
    ip = _embedded_v4(ipaddress.ip_address(address))
    if ip in METADATA:
        return f"{address} is a cloud metadata address"
    if allow_private:
        return None
    checks = [
        (ip.is_unspecified, "unspecified"), (ip.is_loopback, "loopback"),
        (ip.is_link_local, "link-local"), (ip in _CGNAT, "carrier-grade NAT (100.64.0.0/10)"),
        (ip.is_multicast, "multicast"), (ip.is_reserved, "reserved"),
        (ip.is_private, "private"), (not ip.is_global, "not public"),
    ]
    for hit, what in checks:
        if hit:
            return f"{address} is a {what} address" if what != "not public" else \
                f"{address} is not a public address"
    return None


Resolver = Callable[[str, int], list[str]]


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (TCP)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


def split_url(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an http(s) URL; UnsafeDestination says what is wrong with it."""
    if len(url) > 2048:
        raise InvalidUrl("the URL is longer than 2048 characters")
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise InvalidUrl("the URL contains spaces or control characters; percent-encode them")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise InvalidUrl(f"{url!r} is not a valid URL: {e}") from e
    if parts.scheme not in ("http", "https"):
        raise InvalidUrl(f"{url!r} is not an http or https URL")
    if not parts.hostname:
        raise InvalidUrl(f"{url!r} names no host")
    if parts.username or parts.password:
        raise InvalidUrl("the URL must not carry credentials; sign-in goes by the signature")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)


def check_url(url: str, *, allow_private: bool = False, resolver: Resolver = resolve) -> None:
    """Refuse (UnsafeDestination) a URL that is not http(s) or whose host resolves to any
    address the policy refuses. With ``allow_private`` a hostname is not resolved here (it may
    only resolve on the deliverer's network); the transport still checks what it connects to."""
    _, host, port = split_url(url)
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [str(literal)]
    elif allow_private:
        return
    else:
        try:
            addresses = resolver(host, port)
        except (OSError, ValueError) as e:  # ValueError: UnicodeError of a bad IDNA name
            raise UnsafeDestination(f"the host {host!r} does not resolve ({e})") from e
        if not addresses:
            raise UnsafeDestination(f"the host {host!r} does not resolve")
    for address in addresses:
        reason = refusal(address, allow_private=allow_private)
        if reason:
            raise UnsafeDestination(f"refused: {host} resolves to a forbidden address: {reason}"
                                    if literal is None else f"refused: {reason}")
