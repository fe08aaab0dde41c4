"""
The libvirt shell: one long-lived connection per PM (L{host.LibvirtHost}, blocking) and
the service that owns the thread pool every libvirt call runs in (L{service}).
"""
