"""Registries: the one way influal finds tasks, strategies, models, dataset formats and detector families.

A :class:`Registry` maps names to objects (classes, factories, plug-in objects). Entries come from three places,
in this order of precedence:

1. ``register(name, obj)`` calls (built-ins register themselves this way when their module is imported; so may
   your own code, before it runs an experiment);
2. lazily imported built-in modules (``lazy``: name -> module), imported the first time that name is looked up,
   or when every name is listed; importing the module registers the name;
3. installed plug-ins: the ``entry_point_group`` of ``importlib.metadata`` (``[project.entry-points."influal.tasks"]``
   in a plug-in's pyproject.toml), loaded on a miss or when every name is listed.

Loops, the CLI and reports look names up here; nothing outside a registry's owner tests names in if-chains.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Generic, Iterator, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Named objects of one kind (``kind`` names it in error messages)."""

    def __init__(self, kind: str, *, entry_point_group: str | None = None, lazy: dict[str, str] | None = None):
        self.kind = kind
        self.entry_point_group = entry_point_group
        self.lazy = dict(lazy or {})
        self._entries: dict[str, T] = {}
        self._aliases: dict[str, str] = {}
        self._entry_points_loaded = entry_point_group is None

    # ------------------------------------------------------------------ adding
    def register(self, name: str, obj: T | None = None, *, replace: bool = False, aliases: tuple[str, ...] = ()
                 ) -> Any:
        """Register ``obj`` under ``name`` (usable as a decorator when ``obj`` is omitted).

        Registering a name twice raises unless ``replace=True`` or it is the same object.
        """
        if obj is None:
            def decorator(target: T) -> T:
                self.register(name, target, replace=replace, aliases=aliases)
                return target
            return decorator
        if not isinstance(name, str) or not name:
            raise ConfigError(f"a {self.kind} needs a non-empty string name, got {name!r}")
        existing = self._entries.get(name)
        if existing is not None and existing is not obj and not replace:
            raise ConfigError(f"{self.kind} {name!r} is already registered; pass replace=True to override it")
        self._entries[name] = obj
        for alias in aliases:
            self._aliases[alias] = name
        return obj

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)
        for alias in [a for a, target in self._aliases.items() if target == name]:
            del self._aliases[alias]

    # ------------------------------------------------------------------ loading
    def _load_lazy(self, name: str | None = None) -> None:
        """Import the module of ``name`` (every lazy module when None) unless its entry is already there."""
        names = list(self.lazy) if name is None else [name]
        for n in names:
            module = self.lazy.get(n)
            if module is not None and n not in self._entries:
                importlib.import_module(module)

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        from importlib.metadata import entry_points

        for ep in entry_points(group=self.entry_point_group):
            if ep.name in self._entries:
                continue
            try:
                obj = ep.load()
            except Exception as exc:  # noqa: BLE001 - a broken plug-in must say which one it is
                raise ConfigError(f"the {self.kind} plug-in {ep.name!r} ({ep.value}) failed to load: "
                                  f"{type(exc).__name__}: {exc}") from None
            if ep.name not in self._entries:  # loading may have registered it already
                self._entries[ep.name] = obj

    # ------------------------------------------------------------------ looking up
    def resolve(self, name: str) -> str:
        """The canonical name for ``name`` (aliases resolved); raises ConfigError for an unknown name."""
        if name not in self._entries and name in self.lazy:
            self._load_lazy(name)
        if name not in self._entries and name not in self._aliases:
            self._load_entry_points()
        if name in self._aliases:
            return self._aliases[name]
        if name not in self._entries:
            raise ConfigError(f"unknown {self.kind} {name!r}; choose one of {', '.join(self.names())}")
        return name

    def get(self, name: str) -> T:
        return self._entries[self.resolve(name)]

    def names(self) -> list[str]:
        """Every registered name (built-ins and installed plug-ins), sorted."""
        self._load_lazy()
        self._load_entry_points()
        return sorted(self._entries)

    def items(self) -> Iterator[tuple[str, T]]:
        for name in self.names():
            yield name, self._entries[name]

    def __contains__(self, name: object) -> bool:
        try:
            self.resolve(name)  # type: ignore[arg-type]
        except ConfigError:
            return False
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def build(self, name: str, *args, **kwargs) -> Any:
        """Call the registered factory of ``name`` with the arguments."""
        factory: Callable[..., Any] = self.get(name)  # type: ignore[assignment]
        return factory(*args, **kwargs)
