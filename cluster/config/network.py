"""This machine's addresses on the local network, where a headset or phone can reach the gateway."""

from __future__ import annotations

import ipaddress
import socket


def lan_addresses() -> list[str]:
    """This machine's non-loopback IPv4 addresses: the one with the default route first."""
    found: list[str] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # UDP connect sends nothing; it picks the route
            found.append(probe.getsockname()[0])
        except OSError:
            pass
    try:
        found += socket.gethostbyname_ex(socket.gethostname())[2]
    except OSError:
        pass
    return [a for a in dict.fromkeys(found) if not ipaddress.ip_address(a).is_loopback]
