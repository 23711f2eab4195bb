"""How a signed-in device is named to its owner: "Firefox on Windows" from the stored
User-Agent, and an approximate place from the IP address, both as plain text.

The browser comes from ua-parser (the uap-core rules, shipped with the package). The
place comes from a local MaxMind DB file (GEOIP_DATABASE: GeoLite2 or DB-IP Lite, city
or country) if the site operator set one; nothing is ever looked up over the network.
Without one, or for an address it does not know, the page shows the network: the first
three parts of an IPv4 address ("192.0.2.x"), the first four groups of an IPv6 one,
and "private network" or "this computer" for addresses that never leave a site.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
from typing import Any

import maxminddb
from ua_parser import parse

from portal.config import settings

log = logging.getLogger(__name__)

_OS_NAMES = {"Mac OS X": "macOS", "Windows": "Windows", "Linux": "Linux", "Ubuntu": "Linux"}
_BROWSER_NAMES = {"Mobile Safari": "Safari", "Chrome Mobile": "Chrome", "HeadlessChrome": "Chrome"}


def browser(user_agent: str | None) -> str:
    """ "Firefox on Windows", "Safari on iOS", or "Unknown browser"."""
    if not user_agent:
        return "Unknown browser"
    parsed = parse(user_agent[:500])
    name = parsed.user_agent.family if parsed.user_agent else None
    system = parsed.os.family if parsed.os else None
    name = _BROWSER_NAMES.get(name or "", name) if name and name != "Other" else None
    system = _OS_NAMES.get(system or "", system) if system and system != "Other" else None
    if name and system:
        return f"{name} on {system}"
    return name or (f"A browser on {system}" if system else "Unknown browser")


@functools.cache
def _reader(path: str) -> maxminddb.Reader | None:
    try:
        return maxminddb.open_database(path)
    except (OSError, ValueError, maxminddb.InvalidDatabaseError):
        log.warning("GEOIP_DATABASE %s cannot be read; showing networks only", path)
        return None


def _name(record: dict[str, Any], key: str) -> str | None:
    names = (record.get(key) or {}).get("names") or {}
    name = names.get("en")
    return name if isinstance(name, str) and name else None


def _looked_up(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    path = settings().GEOIP_DATABASE
    reader = _reader(path) if path else None
    if reader is None:
        return None
    try:
        record = reader.get(str(address))
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    city, country = _name(record, "city"), _name(record, "country")
    return ", ".join(part for part in (city, country) if part) or None


def place(ip: str | None) -> str:
    """The approximate place or network of an IP address, as text."""
    try:
        address = ipaddress.ip_address(ip or "")
    except ValueError:
        return "Unknown network"
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    if address.is_loopback:
        return "This computer"
    if address.is_private or address.is_link_local:
        # Documentation ranges count as private in Python's tables; they are shown as
        # networks, as the examples in our docs and tests are.
        if not _is_documentation(address):
            return "Private network"
    found = _looked_up(address)
    network = _network(address)
    return f"{found} (network {network})" if found else f"Network {network}"


def _is_documentation(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    ranges = ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")
    return any(address in ipaddress.ip_network(r) for r in ranges)


def _network(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    if isinstance(address, ipaddress.IPv4Address):
        return ".".join(str(address).split(".")[:3]) + ".x"
    groups = address.exploded.split(":")[:4]
    return ":".join(g.lstrip("0") or "0" for g in groups) + "::/64"
