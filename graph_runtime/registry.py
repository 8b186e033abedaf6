"""The explicit node registry: class_type name -> node class.

Node packs (the built-in ``nodes`` package included) are found through the ``graph_runtime.nodes``
entry-point group; each exposes one ``register(registry)`` function, the single place its nodes are listed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from importlib.metadata import entry_points

from .node import Node

log = logging.getLogger(__name__)
ENTRY_POINT_GROUP = "graph_runtime.nodes"


class NodeRegistry:
    def __init__(self) -> None:
        self._nodes: dict[str, type[Node]] = {}
        self._aliases: dict[str, str] = {}
        self.load_errors: dict[str, str] = {}

    def register(self, cls: type[Node], name: str | None = None) -> type[Node]:
        """Add a node class under ``name`` (default: the class name). Names are unique."""
        name = name or cls.type_name or cls.__name__
        if name in self._nodes and self._nodes[name] is not cls:
            raise ValueError(f"node type {name!r} is already registered by {self._nodes[name].__module__}")
        cls.input_specs()  # fail at registration, not at first use, if a declaration is broken
        if cls.__dict__.get("type_name") != name:
            cls.type_name = name
        self._nodes[name] = cls
        return cls

    def register_all(self, classes: Iterable[type[Node]]) -> None:
        for cls in classes:
            self.register(cls)

    def get(self, name: str) -> type[Node] | None:
        return self._nodes.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._nodes

    def __iter__(self) -> Iterator[str]:
        return iter(self._nodes)

    def __len__(self) -> int:
        return len(self._nodes)

    def items(self):
        return self._nodes.items()

    def object_info(self) -> dict[str, dict]:
        return {name: cls.describe() for name, cls in self._nodes.items()}

    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> None:
        """Load every installed node pack; a broken pack is logged and skipped, never fatal."""
        for ep in entry_points(group=group):
            try:
                ep.load()(self)
            except Exception as exc:  # a third-party pack must not take the runtime down
                self.load_errors[ep.name] = f"{type(exc).__name__}: {exc}"
                log.warning("node pack %r failed to load: %s", ep.name, exc)


def default_registry(*, with_entry_points: bool = True) -> NodeRegistry:
    """The built-in utility nodes plus every installed node pack."""
    from . import builtin_nodes

    reg = NodeRegistry()
    builtin_nodes.register(reg)
    if with_entry_points:
        reg.load_entry_points()
    return reg
