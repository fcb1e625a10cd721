"""Root conftest: makes the shiftcheck plugin work from a plain checkout (not pip-installed).

When the distribution is installed, its ``pytest11`` entry point has already registered the
plugin under the name ``shiftcheck``; loading it again would register every hook twice.
"""

from importlib import metadata


def _installed_as_entry_point() -> bool:
    return any(ep.name == "shiftcheck" for ep in metadata.entry_points(group="pytest11"))


if not _installed_as_entry_point():
    pytest_plugins = ["fixtures.plugin"]
