"""
The twistd plugin: C{twistd -n vorchd --config etc/vorchd.ini}.
"""

from twisted.application.service import ServiceMaker

vorchd = ServiceMaker(
    "vorchd",
    "vorchd.tap",
    "A virtualization orchestration daemon: the seed REST API over libvirt and Redis.",
    "vorchd",
)
