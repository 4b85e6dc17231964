"""YAML with lines: plan-file text into plain data, remembering the line of every path.

Syntax errors, empty files, alias bombs and runaway nesting become problems on the
``Report`` rather than exceptions.
"""

from __future__ import annotations

from typing import Any

import yaml

from stages.limits import MAX_DEPTH, MAX_YAML_NODES
from stages.problems import Path, Report


class _TooLarge(Exception):
    pass


class _TooDeep(Exception):
    def __init__(self, line: int) -> None:
        self.line = line


class _Loader(yaml.SafeLoader):
    """SafeLoader that stops while composing at ``MAX_DEPTH`` (PyYAML composes
    recursively: ``[[[[...`` ten thousand deep would exhaust the stack) and at
    ``MAX_YAML_NODES`` (pure-Python YAML costs some 30 us a node: the text limit alone
    would allow seconds of work), and while merging at ``MAX_YAML_NODES`` pairs
    (a PyYAML that kept duplicate merged keys would double ``<<: [*a, *a]`` each level)."""

    depth = 0
    nodes = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self.depth += 1
        self.nodes += 1
        try:
            if self.depth > MAX_DEPTH:
                event: Any = self.peek_event()  # type: ignore[no-untyped-call]
                raise _TooDeep(event.start_mark.line + 1)
            if self.nodes > MAX_YAML_NODES:
                raise _TooLarge
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def flatten_mapping(self, node: Any) -> None:
        super().flatten_mapping(node)
        if len(node.value) > MAX_YAML_NODES:
            raise _TooLarge


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
        report.add((), f"the plan is too large (more than {MAX_YAML_NODES} YAML nodes)", 1)
    except _TooDeep as exc:
        report.add((), f"the plan nests too deeply (more than {MAX_DEPTH} levels)", exc.line)
    except RecursionError:
        # The limits above should leave nothing recursive to exhaust the stack; should
        # some PyYAML path still do so, the answer is a problem, not a crash.
        report.add((), "the plan nests too deeply", 1)
    return None


def _compose(text: str, report: Report) -> object:
    loader = _Loader(text)
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

    def __init__(self, loader: _Loader, report: Report) -> None:
        self.loader = loader
        self.report = report
        self.budget = MAX_YAML_NODES
        self.active: set[int] = set()

    def read(self, node: yaml.Node, path: Path) -> object:
        self.report.lines.setdefault(path, node.start_mark.line + 1)
        self.budget -= 1
        if self.budget < 0:
            raise _TooLarge
        if len(self.active) >= MAX_DEPTH:  # aliases inside aliases nest deeper than the text
            raise _TooDeep(node.start_mark.line + 1)
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
        return self._scalar(node, path)

    def _scalar(self, node: yaml.Node, path: Path) -> object:
        try:
            return self.loader.construct_object(node)
        except ValueError as exc:
            # int() refuses more than 4,300 digits: "percent: 999...9" is a problem.
            self.report.add(path, f"cannot read this value: {exc}".split(";")[0])
            return None

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
            key = self._scalar(node, path)
            if key is not None:
                return key
        self.report.add(path, "field names must be plain strings", node.start_mark.line + 1)
        return None
