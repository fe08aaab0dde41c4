"""
Images, in one place, from the image_file's line to the disk a VM's overlay is built on:

  - L{sources}: an image's source line, parsed once, and the local file it gives (the
    file itself, or a copy fetched once over ssh into L{cache});
  - L{cache}: the ssh fetch cache for remote sources;
  - L{bases}: the fleet's side of base copies (one upload per image and PM however many
    creates wait for it; a copy found trusted for a few seconds);
  - L{copies}: the PM's side (blocking, run in the hypervisor thread pool): digests,
    upload through libvirt's volume stream, verification, pruning.
"""

from vorchd.images.cache import HOST_KEY_POLICIES, ImageCache, ImageUnavailable

__all__ = ["HOST_KEY_POLICIES", "ImageCache", "ImageUnavailable"]
