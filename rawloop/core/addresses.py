"""Whether an address or a URL stays on this machine (loopback), for key checks and warnings."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

__all__ = ["is_loopback_host", "is_loopback_url"]


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` is ``localhost`` or a loopback IP address (``127.0.0.0/8``, ``::1``)."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_loopback_url(url: str) -> bool:
    """Whether ``url`` names a loopback host (an unparsable URL is not one)."""
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return False
    return is_loopback_host(host or "")
