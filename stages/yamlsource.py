"""YAML with lines: plan-file text into plain data, remembering the line of every path.

Syntax errors, empty files, alias bombs and runaway nesting become problems on the
``Report`` rather than exceptions.
"""

from __future__ import annotations

import yaml

from stages.problems import Path, Report

# An alias bomb ("billion laughs") must not expand without bound.
_MAX_NODES = 100_000


class _TooLarge(Exception):
    pass


def read_yaml(text: str, report: Report) -> object:
    """Plain data from YAML ``text``, or ``None`` with the reason added to ``report``."""
    try:
        return _compose(text, report)
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        report.add((), f"YAML syntax error: character #x{exc.character:04x}: {exc.reason}", line)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        detail = ": ".join(part for part in (exc.context, exc.problem) if part)
        report.add((), f"YAML syntax error: {detail}", mark.line + 1 if mark else None)
    except yaml.YAMLError as exc:
        report.add((), f"YAML syntax error: {exc}")
    except _TooLarge:
        report.add((), f"the plan is too large (more than {_MAX_NODES} YAML nodes)", 1)
    except RecursionError:
        # PyYAML composes recursively: "[[[[...]]]]" thousands deep exhausts the stack.
        report.add((), "the plan nests too deeply", 1)
    return None


def _compose(text: str, report: Report) -> object:
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            report.add((), "the plan is empty", 1)
            return None
        return _NodeReader(loader, report).read(node, ())
    finally:
        loader.dispose()


class _NodeReader:
    """Plain data from a composed YAML node tree, noting each path's line on the way."""

    def __init__(self, loader: yaml.SafeLoader, report: Report) -> None:
        self.loader = loader
        self.report = report
        self.budget = _MAX_NODES
        self.active: set[int] = set()

    def read(self, node: yaml.Node, path: Path) -> object:
        self.report.lines.setdefault(path, node.start_mark.line + 1)
        self.budget -= 1
        if self.budget < 0:
            raise _TooLarge
        if id(node) in self.active:
            self.report.add(path, "an alias refers to itself")
            return None
        self.active.add(id(node))
        try:
            return self._read(node, path)
        finally:
            self.active.discard(id(node))

    def _read(self, node: yaml.Node, path: Path) -> object:
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.read(item, (*path, i)) for i, item in enumerate(node.value)]
        return self.loader.construct_object(node)

    def _mapping(self, node: yaml.MappingNode, path: Path) -> dict[object, object]:
        self._check_twice(node, path)
        # Resolves "<<" merge keys as SafeLoader does: merged pairs first, so the
        # fields written in this mapping override them (and their lines win).
        self.loader.flatten_mapping(node)
        out: dict[object, object] = {}
        for key_node, value_node in node.value:
            key = self._key(key_node, path)
            if key is None:
                continue
            key_path = (*path, key) if isinstance(key, str) else path
            self.report.lines[key_path] = key_node.start_mark.line + 1
            out[key] = self.read(value_node, key_path)
        return out

    def _check_twice(self, node: yaml.MappingNode, path: Path) -> None:
        # PyYAML keeps the last of two equal keys silently; a plan should say so.
        seen: set[tuple[str, str]] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                continue
            if (key_node.tag, key_node.value) in seen:
                where = (*path, key_node.value)
                self.report.add(where, "field given twice", key_node.start_mark.line + 1)
            seen.add((key_node.tag, key_node.value))

    def _key(self, node: yaml.Node, path: Path) -> object:
        if isinstance(node, yaml.ScalarNode):
            key = self.loader.construct_object(node)
            if key is not None:
                return key
        self.report.add(path, "field names must be plain strings", node.start_mark.line + 1)
        return None
