"""YAML text -> Python values, the way kws reads configs and run dirs: YAML 1.2 booleans, one-line errors."""

from __future__ import annotations

import re
from typing import Any

import yaml

from kws.errors import ConfigError


class YamlLoader(yaml.SafeLoader):
    """YAML with YAML 1.2's booleans: only true/false. PyYAML follows YAML 1.1, where yes/no/on/off are
    booleans too, and Speech Commands has the labels `yes`, `no`, `on` and `off`."""


YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
# YAML 1.2 floats as well: 1.1 wants a dot before an exponent, so `lr: 1e-3` would be the string "1e-3".
YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9]+(?:\.[0-9]*)?[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's multi-line message as one line: the problem and where (line, column)."""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    mark = getattr(exc, "problem_mark", None)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else problem


def parse_yaml(text: str, context: str) -> Any:
    """`text` as YAML (1.2 booleans); a syntax error is a one-line ConfigError starting with `context`."""
    try:
        return yaml.load(text, YamlLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{context}: {_yaml_problem(exc)}") from None
