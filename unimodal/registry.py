"""One generic name -> object registry for every pluggable kind: task heads, metrics,
extractors, samplers, datasets, model presets and eval tasks.

Each kind owns one ``Registry`` instance; registration is explicit (a decorator or
``add``), and an unknown name is always the same :class:`~unimodal.errors.UnknownNameError`
listing the valid names and the close matches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from .errors import UnimodalError, UnknownNameError, unknown

T = TypeVar("T")


class Registry(Generic[T]):
    """Names mapped to objects of one kind.

    Args:
        kind: what the names are, used in messages (``"task"``, ``"metric"``...).
        error: the error class raised for an unknown name (a subclass of ``UnknownNameError``
            or any :class:`UnimodalError`; subsystems pass their own, e.g. ``EvalError``).
    """

    def __init__(self, kind: str, error: type[UnimodalError] = UnknownNameError) -> None:
        self.kind = kind
        self.error = error
        self._items: dict[str, T] = {}

    def add(self, name: str, obj: T, *, overwrite: bool = False) -> T:
        """Register ``obj`` under ``name``; a second registration of a name is an error unless ``overwrite``."""
        if not isinstance(name, str) or not name:
            raise TypeError(f"a {self.kind} name must be a non-empty string, got {name!r}")
        if name in self._items and not overwrite and self._items[name] is not obj:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._items[name] = obj
        return obj

    def register(self, name: str, *, overwrite: bool = False) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""

        def deco(obj: T) -> T:
            return self.add(name, obj, overwrite=overwrite)

        return deco

    def get(self, name: str) -> T:
        """The object registered as ``name``; an unknown name raises the registry's error."""
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise unknown(self.kind, name, self._items, cls=self.error) from None

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def names(self) -> list[str]:
        """Registered names, in registration order."""
        return list(self._items)

    def items(self) -> list[tuple[str, T]]:
        return list(self._items.items())

    def remove(self, name: str) -> T:
        """Unregister ``name`` (tests and plugins that replace an entry)."""
        return self._items.pop(name)
