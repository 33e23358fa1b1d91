"""YAML with a bound: PyYAML's safe loader plus a budget on what aliases expand to.

`yaml.safe_load` builds an alias bomb ("billion laughs": nine anchors, each a list of nine
aliases of the previous one) as a shared graph in a few kilobytes; the harm comes after, when
validation, printing or JSON walks the graph as a tree of 9**9 nodes and memory runs out.  So the
composed node graph is measured as the tree it stands for (sizes memoised per node, so measuring
costs one pass over the graph) and refused beyond `MAX_NODES`, before anything is constructed.
A job file or an override is a few hundred nodes; the budget leaves ample room."""

from __future__ import annotations

from typing import Any

import yaml

MAX_NODES = 100_000


class YamlTooLarge(yaml.YAMLError):
    """A document whose aliases expand beyond the budget (a bomb, or far beyond any job)."""


def _expanded(node: yaml.Node, sizes: dict[int, int]) -> int:
    known = sizes.get(id(node))
    if known is not None:
        return known
    size = 1
    if isinstance(node, yaml.SequenceNode):
        size += sum(_expanded(child, sizes) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size += sum(_expanded(k, sizes) + _expanded(v, sizes) for k, v in node.value)
    if size > MAX_NODES:
        raise YamlTooLarge(f"its aliases expand to more than {MAX_NODES} values (an alias bomb?); "
                           "write the values out instead of repeating anchors")
    sizes[id(node)] = size
    return size


class BoundedSafeLoader(yaml.SafeLoader):
    """SafeLoader that checks the expanded size of the document before constructing it."""

    def get_single_node(self) -> Any:
        node = super().get_single_node()
        if node is not None:
            try:
                _expanded(node, {})
            except RecursionError:
                raise YamlTooLarge("nested too deeply") from None
        return node


def safe_load(text: str | bytes) -> Any:
    """`yaml.safe_load` with the alias budget (raises YamlTooLarge, a yaml.YAMLError)."""
    return yaml.load(text, Loader=BoundedSafeLoader)  # noqa: S506 (a SafeLoader subclass)
