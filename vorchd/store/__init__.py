"""
The fleet's state in Redis: its keys (L{keys}), the Lua scripts that change it
(C{lua/}, loaded by L{scripts}), the connection (L{client}), its hashes as Python sees
them (L{hashes}), the store's operations (L{store}) and an in-memory fake (L{fake}).
"""

from vorchd.store.client import StoreUnavailable
from vorchd.store.store import Store

__all__ = ["Store", "StoreUnavailable"]
