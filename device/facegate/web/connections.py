"""Connection slots of the console's server: per client and in all, with a reserve kept for the device itself.

One thread serves each connection, so the slots bound the threads: a flood from one address, or from many, is
closed at accept and costs no thread, while the door screen on loopback still gets in.
"""

from __future__ import annotations

import threading
from typing import Any

from facegate.validate.netaddr import is_local_client, limiter_key

MAX_CONNECTIONS = 64  # one thread each; beyond this a new connection is closed at once (a flood costs no threads)
MAX_CONNECTIONS_PER_CLIENT = 12  # per IPv4 address / IPv6 /64 (link-local: per address; facegate.validate.netaddr)
CROWDED_CONNECTIONS = 40  # past this many in all, a client already holding CROWDED_PER_CLIENT gets no more ...
CROWDED_PER_CLIENT = 2  # ... so a few addresses cannot take the last slots: 12 more clients still get 2 each
LOCAL_RESERVED_CONNECTIONS = 8  # beyond MAX_CONNECTIONS, only for 127.0.0.1/::1 (the door screen, the kiosk)


class ConnectionSlots:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._per_client: dict[str, int] = {}
        self._shared = 0  # connections in the MAX_CONNECTIONS pool
        self._local = 0  # connections in the reserve kept for the device itself
        self._held: dict[Any, tuple[str, str]] = {}  # request socket -> (client key, pool)

    def take(self, request: Any, client_address: Any) -> bool:
        """A slot for a new connection: from the shared pool unless this client holds MAX_CONNECTIONS_PER_CLIENT
        (or CROWDED_PER_CLIENT while the pool is crowded); else, for the device itself, from its reserve."""
        address = str(client_address[0])
        key = limiter_key(address)
        with self._lock:
            held = self._per_client.get(key, 0)
            crowded = self._shared >= CROWDED_CONNECTIONS and held >= CROWDED_PER_CLIENT
            if self._shared < MAX_CONNECTIONS and held < MAX_CONNECTIONS_PER_CLIENT and not crowded:
                pool = "shared"
                self._shared += 1
            elif is_local_client(address) and self._local < LOCAL_RESERVED_CONNECTIONS:
                pool = "local"
                self._local += 1
            else:
                return False
            self._per_client[key] = held + 1
            self._held[request] = (key, pool)
            return True

    def release(self, request: Any) -> None:
        with self._lock:
            held = self._held.pop(request, None)
            if held is None:
                return
            key, pool = held
            if pool == "shared":
                self._shared -= 1
            else:
                self._local -= 1
            left = self._per_client.get(key, 1) - 1
            if left > 0:
                self._per_client[key] = left
            else:
                self._per_client.pop(key, None)

    @property
    def connections(self) -> int:
        with self._lock:
            return self._shared + self._local
