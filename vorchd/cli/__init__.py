"""
vorchd's command-line clients: C{vorchd-admin} (L{vorchd.cli.admin}), the administrator's
console for a running daemon's admin port.
"""
