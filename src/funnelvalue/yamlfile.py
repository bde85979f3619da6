"""YAML files that remember where things are, so errors can name the line.

Marketers edit the mapping file by hand; "stages[2].value: invalid" is useless to them, "line 14"
is not. PyYAML's node tree carries marks: we load the data normally and keep the tree beside it
to translate a validation error's location into a line number.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from funnelvalue.errors import ConfigError


@dataclass(frozen=True)
class YamlDocument:
    """Parsed data plus the node tree it came from."""

    path: Path
    data: Any
    root: yaml.Node | None

    def node_at(self, loc: Sequence[str | int]) -> yaml.Node | None:
        """The node at exactly ``loc`` (None when the file has nothing there)."""
        node = self.root
        for part in loc:
            if isinstance(node, yaml.MappingNode):
                node = next(
                    (v for k, v in node.value if getattr(k, "value", None) == str(part)), None
                )
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
                node = node.value[part] if part < len(node.value) else None
            else:
                return None
        return node

    def line_of(self, loc: Sequence[str | int]) -> int | None:
        """Line (1-based) of the deepest node along ``loc`` that exists in the file."""
        node = self.root
        if node is None:
            return None
        line: int = node.start_mark.line + 1
        for part in loc:
            if isinstance(node, yaml.MappingNode):
                match = next(
                    ((k, v) for k, v in node.value if getattr(k, "value", None) == str(part)),
                    None,
                )
                if match is None:
                    break
                line = match[0].start_mark.line + 1
                node = match[1]
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
                if part >= len(node.value):
                    break
                node = node.value[part]
                line = node.start_mark.line + 1
            else:
                break
        return line


def load_yaml(path: Path, what: str) -> YamlDocument:
    """Read a YAML file; a syntax error or a repeated key becomes a ConfigError with its line."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what} {path} cannot be read: {exc}") from exc
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {plain_words(exc, text)}") from exc
    duplicates = [f"line {line}: key '{key}' appears twice" for line, key in _repeated_keys(root)]
    if duplicates:
        raise ConfigError(
            f"{path} has repeated keys (the later one would silently win)", duplicates
        )
    return YamlDocument(path=path, data=data, root=root)


def _repeated_keys(node: yaml.Node | None) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            name = str(getattr(key, "value", ""))
            if name in seen:
                found.append((key.start_mark.line + 1, name))
            seen.add(name)
            found.extend(_repeated_keys(value))
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            found.extend(_repeated_keys(item))
    return found


def plain_words(exc: yaml.YAMLError, text: str) -> str:
    """PyYAML's parser messages as a person editing the file needs them: the line, what is
    wrong there in words, and the line itself."""
    problem = str(getattr(exc, "problem", "") or exc)
    context = str(getattr(exc, "context", "") or "")
    mark = getattr(exc, "problem_mark", None)
    opened = getattr(exc, "context_mark", None)
    line = mark.line + 1 if mark is not None else None
    if "'\\t'" in problem or "\t" in problem:
        words = "a tab: YAML indents with spaces only (replace the tab with spaces)"
    elif "mapping values are not allowed" in problem:
        words = (
            "a 'key: value' where YAML expected only a value. Often the line above is the "
            "cause: a missing space after ':' (write 'name: lead', not 'name:lead'), or a "
            "value with ': ' inside it that needs quotes"
        )
    elif "expected <block end>" in problem:
        words = (
            "the indentation does not line up with the lines above (every item of a list, "
            "and every key of a section, starts in the same column)"
        )
    elif "could not find expected ':'" in problem:
        words = (
            "a line without 'key: value' in a section (a missing ':', or a list item without '- ')"
        )
    elif "quoted scalar" in context and opened is not None:
        line = opened.line + 1
        words = "a quote opened here is never closed"
    elif "flow" in context and opened is not None:
        words = f"a [list] or {{set}} opened on line {opened.line + 1} is not closed (] or }})"
    else:
        words = problem
    if line is None:
        return words
    lines = text.splitlines()
    shown = lines[line - 1].strip() if 0 < line <= len(lines) else ""
    return f"line {line}: {words}" + (f"\n    {line} | {shown}" if shown else "")
