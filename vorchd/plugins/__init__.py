"""
The drop-in package for third-party vorchd plugins, found with Twisted's plugin system:
C{twisted.plugin.getPlugins(IAllocationPolicy, vorchd.plugins)}.

Like C{twisted/plugins}, any C{vorchd/plugins/} directory (without an C{__init__.py})
under an entry of C{sys.path} is part of this package, so a policy can be installed
without touching vorchd: put a module there that defines, at module level, an instance
of a class declared C{@implementer(IAllocationPolicy)} with a unique C{name}.
"""

from twisted.plugin import pluginPackagePaths

__path__.extend(pluginPackagePaths(__name__))  # noqa: F821 (set by the import system)
__all__: list[str] = []
