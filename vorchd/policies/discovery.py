"""
Finding third-party allocation policies: Twisted plugins and dotted paths.

Option key of the C{[allocation]} section read here:

  - C{plugin_path}: directories searched for third-party policy modules, separated
    by C{:}, in addition to every C{vorchd/plugins/} directory on C{sys.path}. A
    module there defines, at module level, an instance of a class declared
    C{@implementer(IAllocationPolicy)} with a C{name} no other policy has; C{policy}
    then selects it by that name. A built-in policy keeps its name over a plugin's.
    Twisted may write a C{dropin.cache} file into each directory. Relative paths are
    taken from the daemon's working directory. Unset or empty: none.

A policy that is not a plugin can also be selected by a dotted path,
C{policy = package.module:attr} (or C{package.module.attr}), to a policy object, to a
class or factory called with the C{[allocation]} options if it takes one argument and
with none otherwise, or to a class with a C{from_options(options)} class method.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import ModuleType

from twisted.plugin import getPlugins, pluginPackagePaths
from zope.interface.exceptions import Invalid
from zope.interface.verify import verifyObject

from vorchd.policies import IAllocationPolicy, InvalidPolicy, UnknownPolicy

PLUGIN_PACKAGE = "vorchd.plugins"


class PolicyWarning(UserWarning):
    """
    A plugin was found but not used: it is broken or its name is taken.
    """


def plugin_dirs(options: Mapping[str, str]) -> list[str]:
    """
    The absolute directories the C{plugin_path} option names, in order.

    @raise ValueError: one of them is not a directory.
    """
    dirs: list[str] = []
    for entry in (options.get("plugin_path") or "").split(":"):
        entry = entry.strip()
        if not entry:
            continue
        path = os.path.abspath(os.path.expanduser(entry))
        if not os.path.isdir(path):
            raise ValueError(f"plugin_path: {entry!r} is not a directory")
        if path not in dirs:
            dirs.append(path)
    return dirs


def _within(path: str, directories: Sequence[str]) -> bool:
    path = os.path.abspath(path)
    return any(os.path.commonpath([path, d]) == d for d in directories)


@contextmanager
def searching(extra: Sequence[str]) -> Iterator[ModuleType]:
    """
    The plugin package, with C{extra} and every C{vorchd/plugins/} directory now on
    C{sys.path} (even one added after the package was imported) on its C{__path__}
    for the duration. Afterwards the path is as it was, and the modules imported from
    those added directories are forgotten, so that the next search imports them
    afresh (and from the right directory) rather than leaking from one to the next.
    """
    package = importlib.import_module(PLUGIN_PACKAGE)
    saved = list(package.__path__)
    added: list[str] = []
    for d in (*extra, *pluginPackagePaths(PLUGIN_PACKAGE)):
        if d not in saved and d not in added:
            added.append(d)
    before = set(sys.modules)
    package.__path__.extend(added)
    importlib.invalidate_caches()
    try:
        yield package
    finally:
        package.__path__[:] = saved
        prefix = PLUGIN_PACKAGE + "."
        for name in set(sys.modules) - before:
            module = sys.modules[name]
            origin = getattr(module, "__file__", None)
            if name.startswith(prefix) and origin and _within(origin, added):
                del sys.modules[name]
                if name.count(".") == PLUGIN_PACKAGE.count(".") + 1:
                    package.__dict__.pop(name[len(prefix) :], None)


def _ignore(plugin: object, why: str) -> None:
    # stacklevel 3: the caller of plugin_policies, e.g. policy_named.
    warnings.warn(
        f"allocation policy plugin {plugin!r} ignored: {why}", PolicyWarning, stacklevel=3
    )


def plugin_policies(options: Mapping[str, str]) -> dict[str, IAllocationPolicy]:
    """
    The policies Twisted's plugin system finds in C{vorchd.plugins} and the
    C{plugin_path} directories, by name. A plugin that fails C{verifyObject}, has no
    name, or has the name of a built-in policy or of a plugin found before it is left
    out with a L{PolicyWarning}. Twisted logs a plugin module that fails to import.

    @raise ValueError: C{plugin_path} names something that is not a directory.
    """
    from vorchd.policies.builtin import BUILTIN

    with searching(plugin_dirs(options)) as package:
        found = list(getPlugins(IAllocationPolicy, package))
    policies: dict[str, IAllocationPolicy] = {}
    for plugin in found:
        try:
            verifyObject(IAllocationPolicy, plugin)
        except Invalid as e:
            _ignore(plugin, str(e))
            continue
        name = plugin.name
        if not isinstance(name, str) or not name:
            _ignore(plugin, f"its name is {name!r}")
        elif name in BUILTIN:
            _ignore(plugin, f"{name!r} is a built-in policy")
        elif name in policies:
            _ignore(plugin, f"{name!r} is already {policies[name]!r}")
        else:
            policies[name] = plugin
    return policies


def looks_dotted(name: str) -> bool:
    """
    Whether C{name} has the form of C{package.module:attr} or C{package.module.attr}.
    """
    return (
        name.count(":") <= 1
        and ("." in name or ":" in name)
        and all(part.isidentifier() for part in re.split(r"[.:]", name))
    )


def _import(module_name: str, path: str) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and (module_name == e.name or module_name.startswith(e.name + ".")):
            raise UnknownPolicy(
                f"unknown allocation policy {path!r}: it is not the name of a policy, and"
                f" as a dotted path there is no module {e.name!r}"
            ) from None
        raise InvalidPolicy(f"allocation policy {path!r}: importing {module_name}: {e}") from e
    except Exception as e:
        raise InvalidPolicy(f"allocation policy {path!r}: importing {module_name}: {e}") from e


def _resolve(path: str) -> object:
    module_name, colon, attrs = path.partition(":")
    if colon:
        obj: object = _import(module_name, path)
        names = attrs.split(".")
    else:
        parts = path.split(".")
        # The longest prefix that is a module; the rest are attributes.
        for i in range(len(parts) - 1, 0, -1):
            module_name = ".".join(parts[:i])
            try:
                obj = _import(module_name, path)
            except InvalidPolicy:
                raise
            except UnknownPolicy:
                if i == 1:
                    raise
                continue
            names = parts[i:]
            break
    for attr in names:
        try:
            obj = getattr(obj, attr)
        except AttributeError:
            raise InvalidPolicy(
                f"allocation policy {path!r}: {module_name} has no attribute {'.'.join(names)!r}"
            ) from None
    return obj


def _make(factory: object, options: Mapping[str, str], path: str) -> object:
    if inspect.isclass(factory) and callable(getattr(factory, "from_options", None)):
        factory = factory.from_options
        takes_options = True
    else:
        try:
            inspect.signature(factory).bind(options)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            takes_options = False
        else:
            takes_options = True
    try:
        return factory(dict(options)) if takes_options else factory()  # type: ignore[operator]
    except ValueError:
        raise
    except Exception as e:
        raise InvalidPolicy(f"allocation policy {path!r}: making the policy: {e!r}") from e


def from_dotted_path(path: str, options: Mapping[str, str]) -> IAllocationPolicy:
    """
    The policy at C{path} (C{package.module:attr} or C{package.module.attr}): the
    object itself if it provides L{IAllocationPolicy}; otherwise, if it is a class
    with a C{from_options} class method, what that returns given C{options}; otherwise,
    if it is callable, what it returns called with C{options} if it takes one argument
    and with none otherwise.

    @raise UnknownPolicy: the module does not exist.
    @raise InvalidPolicy: it cannot be imported, or it (or what it returns) does not
        provide L{IAllocationPolicy} as C{verifyObject} checks it.
    @raise ValueError: the factory refused C{options}.
    """
    obj = _resolve(path)
    if not IAllocationPolicy.providedBy(obj):
        if not callable(obj):
            raise InvalidPolicy(
                f"allocation policy {path!r}: {obj!r} is neither an IAllocationPolicy nor"
                " a factory of one"
            )
        obj = _make(obj, options, path)
    try:
        verifyObject(IAllocationPolicy, obj)
    except Invalid as e:
        raise InvalidPolicy(
            f"allocation policy {path!r}: {obj!r} does not provide IAllocationPolicy: {e}"
        ) from None
    return obj  # type: ignore[return-value]
