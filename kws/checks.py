"""Range checks for config values, shared by every config section (`kws/config.py`, `kws/augment/config.py`).

Each raises a `ConfigError` that names the dotted key, the allowed range and the value found, e.g.
"`optim.lr` must be > 0, got -1.0"; `config_from_dict` puts the file (or `--set`) in front. Torch-free, so
building a config stays instant.
"""

from __future__ import annotations

from typing import Any

from kws.errors import ConfigError


def _shown(value: Any) -> str:
    # tuples are YAML lists to the user: show [0.9, 0.1], not (0.9, 0.1)
    return repr(list(value)) if isinstance(value, tuple) else repr(value)


def require(ok: bool, key: str, rule: str, value: Any) -> None:
    """Raise "`key` must be <rule>, got <value>" unless `ok`."""
    if not ok:
        raise ConfigError(f"`{key}` must be {rule}, got {_shown(value)}")


def at_least(key: str, value: float, low: float) -> None:
    require(value >= low, key, f">= {low:g}", value)


def above(key: str, value: float, low: float) -> None:
    require(value > low, key, f"> {low:g}", value)


def probability(key: str, value: float) -> None:
    require(0.0 <= value <= 1.0, key, "a probability in [0, 1]", value)


def span(key: str, value: tuple[float, float] | None, *, positive: bool = False) -> None:
    """A `[low, high]` pair with low <= high (None: switched off); `positive`: low > 0 as well."""
    if value is None:
        return
    require(value[0] <= value[1], key, "[low, high] with low <= high", value)
    if positive:
        require(value[0] > 0, key, "[low, high] with 0 < low <= high", value)
