"""A cheaper `__init__` for frozen dataclasses built on every message.

A frozen dataclass's generated `__init__` sets each field through `object.__setattr__` (its own
`__setattr__` refuses); filling the instance dict directly gives the same object at about half
the cost. `pana.avp.Avp` and `pana.message.PanaMessage` write that `__init__` by hand; this
decorator generates it for the small result and event classes the engines build per message
(docs/key-hierarchy.md, issue 12's fifth pass). The instances stay frozen, equal and hashable
exactly as before: only construction changes.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

T = TypeVar("T")


def frozen_init(cls: type[T]) -> type[T]:
    """Give the frozen dataclass `cls` an `__init__` that fills its instance dict directly: the
    same parameters (names, order, defaults), then `__post_init__` if it has one. Refuses a
    class it cannot do that for (not a frozen dataclass, `__slots__`, or fields with
    `init=False`, a default factory or keyword-only), rather than building a different one."""
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen:
        raise TypeError(f"{cls.__name__}: frozen_init needs a frozen dataclass")
    if "__slots__" in cls.__dict__:
        raise TypeError(f"{cls.__name__}: frozen_init needs an instance dict")
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    args: list[str] = []
    defaults: dict[str, Any] = {}
    for f in fields:
        if not f.init or f.kw_only or f.default_factory is not dataclasses.MISSING:
            raise TypeError(f"{cls.__name__}.{f.name}: frozen_init takes plain fields only")
        if f.default is dataclasses.MISSING:
            args.append(f.name)
        else:
            defaults[f"_default_{f.name}"] = f.default
            args.append(f"{f.name}=_default_{f.name}")
    body = [f"    d[{f.name!r}] = {f.name}" for f in fields]
    if hasattr(cls, "__post_init__"):
        body.append("    self.__post_init__()")
    source = "\n".join([f"def __init__(self, {', '.join(args)}):", "    d = self.__dict__", *body])
    namespace: dict[str, Any] = {}
    exec(source, dict(defaults), namespace)  # (the source is built from field names only)
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    setattr(cls, "__init__", init)  # noqa: B010 - a class attribute replaced on purpose
    return cls
