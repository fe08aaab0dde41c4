"""
libvirt's own event loop, which delivers keepalive and connection-close events.

It must be registered before the first connection is opened, and it runs in a thread
of its own; whatever it reports is handed to the reactor with callFromThread.
"""

from __future__ import annotations

import threading

import libvirt

_started = False
_lock = threading.Lock()


def start_event_loop() -> None:
    """
    Register libvirt's default event implementation and run it in a daemon thread,
    once per process (later calls do nothing).
    """
    global _started
    with _lock:
        if _started:
            return
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=run, name="vorchd-libvirt-events", daemon=True).start()
        _started = True
