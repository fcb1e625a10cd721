"""World spec strings and model names; imports nothing heavy (the plugin reads them at collection)."""

from __future__ import annotations

class WorldSpecError(ValueError):
    """A ``world:`` spec that names no world model, or a malformed ``@seed=`` option."""


WORLD_SOURCE = "world"  # the prompts' single source: 8 prompts per family are too few to test each alone
MODEL_NAMES = ("base", "good", "bad-copy", "bad-cpt")
ALIASES = {"base": "base", "null": "base", "good": "good", "bad-copy": "bad-copy", "bad-cpt": "bad-cpt"}


def parse_world_spec(spec: str) -> tuple[str, int] | None:
    """``"world:good"`` -> ("good", 0); ``"world:good@seed=1"`` -> ("good", 1); others -> None."""
    if not spec.startswith("world:"):
        return None
    body = spec[len("world:"):]
    name, sep, option = body.partition("@")
    seed = 0
    if sep:
        key, eq, value = option.partition("=")
        if key != "seed" or not eq or not value.strip().lstrip("-").isdigit():
            raise WorldSpecError(f"bad world spec {spec!r}: expected 'world:NAME' or 'world:NAME@seed=INT'")
        seed = int(value)
    if name not in ALIASES:
        raise WorldSpecError(f"unknown world model {name!r} in {spec!r}; valid names: {', '.join(ALIASES)}")
    return name, seed
