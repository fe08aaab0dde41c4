"""
The fleet's state in Redis: its keys (L{keys}), the Lua scripts that change it
(C{lua/}, loaded by L{scripts}), the connection (L{client}) and the store's operations
(L{store}).
"""

from vorchd.room import limit
from vorchd.store.client import StoreUnavailable
from vorchd.store.store import Store

__all__ = ["Store", "StoreUnavailable", "limit"]
