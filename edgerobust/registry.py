"""Name -> builder registries: models, datasets, attacks, schemes, bound rules, runtimes."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from .errors import UnknownNameError

T = TypeVar("T")
REGISTRIES: dict[str, Registry] = {}  # every registry by kind, so the config layer can check names it cannot import


class Registry(Generic[T]):
    """A named table of builders. `kind` names the thing in error messages ("model", "attack")."""

    def __init__(self, kind: str, items: dict[str, T] | None = None):
        """`items`: an existing name -> record table to serve (shared, not copied: the runner's data tables)."""
        self.kind = kind
        self._items: dict[str, T] = {} if items is None else items
        self._help: dict[str, str] = {}
        REGISTRIES.setdefault(kind, self)

    def register(self, name: str, help: str = "") -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' registered twice")
            self._items[name] = obj
            self._help[name] = help or (getattr(obj, "__doc__", "") or "").strip().split("\n")[0]
            return obj

        return decorator

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
