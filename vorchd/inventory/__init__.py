"""
The three input files an operator gives vorchd, parsed into L{PMEntry}, L{ImageEntry} and
L{Flavor} values: one module per format.

  - L{pm_file}: one PM per line (a libvirt URI, C{host} or C{user@host});
  - L{image_file}: one image per line (an absolute path or C{[user@]host:/path});
  - L{flavor_file}: the instance types, as JSON, a Python literal or a bare fragment.

What they share: L{inputfile} (reading a file, its lines, L{InputFileError}), L{hosts}
(host and user names checked as written) and L{literal} (a literal read without
evaluating it). Every problem is an L{InputFileError} naming the file, the line and what is
wrong, because a malformed file must stop start-up with a message an operator can act on.

Pure apart from reading the one file named. The one exception is the default C{is_local}
of L{parse_pm_text}, which asks L{vorchd.thismachine} (DNS) about a host line that is not a
loopback address. Importing this package looks nothing up.
"""

from vorchd.inventory.flavor_file import parse_flavor_file, parse_flavor_text
from vorchd.inventory.image_file import parse_image_file, parse_image_text
from vorchd.inventory.inputfile import InputFileError
from vorchd.inventory.pm_file import DEFAULT_SSH_TEMPLATE, LOCAL_URI, parse_pm_file, parse_pm_text

# Found here before this machine's detection had a module of its own; callers may use either.
from vorchd.thismachine import local_names, this_machine

__all__ = [
    "DEFAULT_SSH_TEMPLATE",
    "LOCAL_URI",
    "InputFileError",
    "local_names",
    "parse_flavor_file",
    "parse_flavor_text",
    "parse_image_file",
    "parse_image_text",
    "parse_pm_file",
    "parse_pm_text",
    "this_machine",
]
