"""Access log lines with the client's address masked (PII in application logs).

Seed 003 ("PII masking in logs") and ASVS 4.0.3 V7.1.1: an IP address is personal data, and
operators ship access logs to places the attempt log (which keeps full addresses, on purpose,
for abuse detection) never goes. IPv4 keeps its /24, IPv6 its /48: enough to see a network
misbehave, not enough to name a customer. License keys never appear: they travel in bodies.
"""

from __future__ import annotations

import ipaddress
import logging

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse


def mask_ip(address: str | None) -> str:
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return "-"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


class MaskedAccessLogger(AbstractAccessLogger):
    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        self.logger.info(
            '%s "%s %s" %s %s %.1fms "%s"',
            mask_ip(request.remote),
            request.method,
            request.path,
            response.status,
            response.body_length,
            time * 1000,
            request.headers.get("User-Agent", "-")[:120],
        )

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)
