"""Name -> builder registries: models, datasets, attacks, schemes, bound rules, runtimes."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from .errors import UnknownNameError

T = TypeVar("T")
REGISTRIES: dict[str, Registry] = {}  # every registry by kind, so the config layer can check names it cannot import


def own_name(obj: object) -> str:
    """The name an object registers under: its own `name` attribute (not an inherited one), else `__name__`."""
    name = vars(obj).get("name") if hasattr(obj, "__dict__") else None
    if not isinstance(name, str):
        name = obj.__name__.lower()
    return name


class Registry(Generic[T]):
    """A named table of builders. `kind` names the thing in error messages ("model", "attack")."""

    def __init__(self, kind: str, items: dict[str, T] | None = None):
        """`items`: an existing name -> record table to serve (shared, not copied: the runner's data tables)."""
        self.kind = kind
        self._items: dict[str, T] = {} if items is None else items
        self._help: dict[str, str] = {}
        REGISTRIES.setdefault(kind, self)

    def register(self, target: str | T | None = None, help: str = "") -> Callable[[T], T] | T:
        """Register under the object's own name: `@REG.register` (or `@REG.register(help=...)`).

        The name is written once, as timm's `register_model` takes it from the function: a class or function's own
        `name` attribute where the name is not an identifier ("apgd-ce"), else its `__name__` in lower case. The
        help line is `help` or the first line of the docstring. `register("name", help)` names an object that
        carries no name of its own (a record, or None as a marker).
        """
        if target is None or isinstance(target, str):
            return lambda obj: self._add(target if target is not None else own_name(obj), obj, help)
        return self._add(own_name(target), target, help)

    def _add(self, name: str, obj: T, help: str) -> T:
        if name in self._items:
            raise ValueError(f"{self.kind} '{name}' registered twice")
        own = vars(obj).get("name") if hasattr(obj, "__dict__") else None
        if isinstance(own, str) and own != name:
            raise ValueError(f"{self.kind} '{own}' registered as '{name}': let it register under its own name")
        if isinstance(obj, type) and own is None:
            obj.name = name  # instances of a class named by its __name__ carry the key too (set once, at definition)
        self._items[name] = obj
        self._help[name] = help or (getattr(obj, "__doc__", "") or "").strip().split("\n")[0]
        return obj

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(self.kind, name, self._items) from None

    def help(self, name: str) -> str:
        return self._help.get(name) or getattr(self._items.get(name), "description", "")

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
