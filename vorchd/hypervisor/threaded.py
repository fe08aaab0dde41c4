"""
Asynchronous adapters generated from an interface of blocking methods, after flocker's
C{auto_threaded}: L{threaded} gives a class one method per method of a zope.interface,
each handing its call (name, arguments) to the instance's C{_call}, which runs it
elsewhere (in a thread pool) and answers a Deferred.

The class declares each method as a stub, with its parameters and its asynchronous return
type, so that readers and type checkers see what the adapter offers; L{threaded} checks,
when the class is made, that the stubs are exactly the interface's methods with the same
parameters, and replaces them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TypeVar

from zope.interface.interface import InterfaceClass, Method

C = TypeVar("C", bound=type)


def methods_of(interface: InterfaceClass) -> dict[str, Method]:
    """
    The methods of C{interface} (its attributes left out), by name.
    """
    return {
        name: interface[name]
        for name in interface.names(all=True)
        if isinstance(interface[name], Method)
    }


def threaded(interface: InterfaceClass) -> Callable[[C], C]:
    """
    A class decorator that makes each method of C{interface} a method of the class calling
    C{self._call(name, args, kwargs)} and answering what it answers.

    @raise TypeError: (when decorating) the class does not declare a stub for each method
        of C{interface}, or a stub's parameters are not the interface method's.
    """
    methods = methods_of(interface)

    def decorate(cls: C) -> C:
        for name, method in methods.items():
            stub = cls.__dict__.get(name)
            if not inspect.isfunction(stub):
                raise TypeError(f"{cls.__name__} declares no {interface.__name__}.{name}")
            _check(cls, interface, method, stub)
            setattr(cls, name, _forward(name, method, stub))
        return cls

    return decorate


def _check(cls: type, interface: InterfaceClass, method: Method, stub: Callable) -> None:
    info = method.getSignatureInfo()
    params = list(inspect.signature(stub).parameters.values())[1:]
    names = tuple(p.name for p in params)
    optional = {p.name for p in params if p.default is not inspect.Parameter.empty}
    if names != info["positional"] or optional != set(info["optional"]):
        raise TypeError(
            f"{cls.__name__}.{method.__name__}{names} does not match "
            f"{interface.__name__}.{method.__name__}{info['positional']}"
        )


def _forward(name: str, method: Method, stub: Callable) -> Callable:
    def call(self, *args, **kwargs):
        return self._call(name, args, kwargs)

    call.__name__ = name
    call.__qualname__ = stub.__qualname__
    call.__doc__ = method.__doc__
    call.__signature__ = inspect.signature(stub)
    return call
