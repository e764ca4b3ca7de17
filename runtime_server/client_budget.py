"""A budget of refused requests per client address, so that a client that keeps sending requests the
server must refuse cannot spend the server's CPU at the rate it can send them.

Every refusal for a client mistake (an error kind whose HTTP status is 4xx: malformed, oversized, late,
unauthenticated, for another model ...) costs the client's address one token of a token bucket that holds
``burst`` tokens and refills at ``refill_per_s``. A request from an address with less than one token left
is held, without reading its body, until the address would have a token again (at most ``max_hold``
seconds, less if the server begins shutting down), then refused as ``rate_limited`` (HTTP 429 with
``Retry-After``; gRPC ``RESOURCE_EXHAUSTED``; compact stream code 12). The refusal itself costs nothing,
so a client that waits gets served again; one that does not is answered at most about ``refill_per_s``
times a second with real work, and its held requests cost the server a timer each. An address holding
``max_held`` requests already gets the refusal at once. A client that makes no mistakes never meets the
budget; one that makes a few is never slowed.

The key is the peer's address as the server sees it: an IPv4 address, or the /64 network of an IPv6
address (what one site is usually given, so that a client cannot step around its budget by changing the
low bits). Behind a proxy or a NAT every client shares the proxy's, so turn the budget off there
(``burst = 0``) and limit at the proxy. The table keeps at most ``max_clients`` addresses (the one charged
longest ago goes first).

    budget = ClientErrorBudget(ClientErrorLimits())
    await budget.admit(address, closing)    # at the start of each request; raises rate_limited
    budget.charge(address, kind)            # after each refusal
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import time
import urllib.parse
from dataclasses import dataclass
from typing import Callable

from codec.wire import ProtocolError, error_kind

RATE_LIMITED = "rate_limited"


def charged(kind: str) -> bool:
    """Whether a refusal of ``kind`` counts against the client: a client mistake (a 4xx kind of the wire
    contract), not a server fault or unavailability, and not the rate limit's own refusal."""
    try:
        status = error_kind(kind).http
    except KeyError:
        return False
    return 400 <= status < 500 and kind != RATE_LIMITED


@dataclass(frozen=True)
class ClientErrorLimits:
    """The budget of refused requests per client address (``burst = 0``: no budget)."""

    burst: float = 20.0
    """Refusals an address may collect at once before its requests are held."""
    refill_per_s: float = 2.0
    """Refusals per second an address may collect for ever."""
    max_hold: float = 1.0
    """Longest time a request of an address over its budget is held before its 429."""
    max_held: int = 64
    """Requests of one address held at once; more are refused at once."""
    max_clients: int = 65536
    """Addresses remembered at once."""

    def __post_init__(self) -> None:
        if self.burst < 0:
            raise ValueError(f"client error burst must be >= 0 (0: no budget), got {self.burst}")
        if self.burst and not self.burst >= 1:
            raise ValueError(f"client error burst must be 0 or >= 1, got {self.burst}")
        if self.burst and not self.refill_per_s > 0:
            raise ValueError(f"client error refill must be > 0 per s, got {self.refill_per_s}")
        if self.max_hold < 0:
            raise ValueError(f"client error max hold must be >= 0 s, got {self.max_hold}")
        if self.max_held < 0 or self.max_clients < 1:
            raise ValueError(f"max held ({self.max_held}) must be >= 0 and max clients ({self.max_clients}) >= 1")

    @property
    def enabled(self) -> bool:
        return self.burst > 0


class ClientErrorBudget:
    """Token buckets of refused requests, one per client address (see the module docstring)."""

    def __init__(self, limits: ClientErrorLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # address -> (tokens, time they were counted)
        self._held: dict[str, int] = {}
        self.refused = 0
        """Requests refused as ``rate_limited`` so far."""

    def __len__(self) -> int:
        """Addresses remembered now."""
        return len(self._buckets)

    @property
    def held(self) -> int:
        """Requests being held now."""
        return sum(self._held.values())

    def tokens(self, client: str) -> float:
        """The refusals ``client`` may still collect before its requests are held."""
        tokens, then = self._buckets.get(client, (self.limits.burst, 0.0))
        return min(self.limits.burst, tokens + (self._clock() - then) * self.limits.refill_per_s)

    def wait(self, client: str) -> float:
        """Seconds until ``client`` has one token again (0: it has one now, or there is no budget)."""
        if not self.limits.enabled:
            return 0.0
        return max(0.0, (1.0 - self.tokens(client)) / self.limits.refill_per_s)

    def charge(self, client: str | None, kind: str) -> None:
        """Count a refusal of ``kind`` against ``client`` (nothing for a kind that is not a client mistake)."""
        if not self.limits.enabled or client is None or not charged(kind):
            return
        tokens = self.tokens(client) - 1.0
        self._buckets.pop(client, None)  # re-inserted last: the dict's order is oldest charge first
        self._buckets[client] = (tokens, self._clock())
        if len(self._buckets) > self.limits.max_clients:
            self._forget()

    def _forget(self) -> None:
        """Drop the address charged longest ago (the dict keeps addresses in the order of their last charge),
        whose bucket has refilled the longest: constant time, whatever the number of addresses."""
        del self._buckets[next(iter(self._buckets))]

    async def admit(self, client: str | None, closing: asyncio.Future | None = None) -> None:
        """Return at once for a client within its budget; otherwise hold the request (until ``client``
        would have a token again, at most ``max_hold`` s, or until ``closing`` is done) and raise
        ``ProtocolError`` of kind ``rate_limited`` naming when to retry."""
        if client is None:
            return
        wait = self.wait(client)
        if wait <= 0:
            return
        held = self._held.get(client, 0)
        if held < self.limits.max_held and self.limits.max_hold > 0:
            self._held[client] = held + 1
            try:
                hold = min(wait, self.limits.max_hold)
                if closing is None:
                    await asyncio.sleep(hold)
                elif not closing.done():
                    await asyncio.wait([closing], timeout=hold)
            finally:
                left = self._held[client] - 1
                if left:
                    self._held[client] = left
                else:
                    del self._held[client]
        self.refused += 1
        raise RateLimitedError(client, self.wait(client))


class RateLimitedError(ProtocolError):
    """A request refused because its client collected too many refusals; ``retry_after`` in seconds."""

    def __init__(self, client: str, retry_after: float) -> None:
        self.retry_after = max(1, math.ceil(retry_after))
        super().__init__(
            f"too many refused requests from {client}; retry after {self.retry_after} s (requests the server "
            "refuses as client mistakes are limited per client address)",
            kind=RATE_LIMITED,
        )


def peer_address(peer: object) -> str | None:
    """The budget's key for a socket peer (``("1.2.3.4", port)``, ``("::1", port, 0, 0)``) or a gRPC peer
    string (``ipv4:1.2.3.4:port``, ``ipv6:[::1]:port``): the IPv4 address (also of an IPv4-mapped IPv6
    one), or the IPv6 address's /64 network; None when there is none (a Unix socket, an unreadable peer)."""
    host = None
    if isinstance(peer, tuple) and peer and isinstance(peer[0], str):
        host = peer[0]
    elif isinstance(peer, str):
        scheme, _, rest = urllib.parse.unquote(peer).partition(":")
        if scheme in ("ipv4", "ipv6"):
            host = rest.rpartition(":")[0].strip("[]")
    if not host:
        return None
    try:
        address = ipaddress.ip_address(host.partition("%")[0])  # without an IPv6 zone ("fe80::1%eth0")
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)
