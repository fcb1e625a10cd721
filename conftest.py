"""Root conftest of the shiftcheck repository.

The plugin is registered by the installed distribution's ``pytest11`` entry point
(``shiftcheck = "shiftcheck.fixtures.plugin"``): install with ``pip install -e .`` first. Nothing is
registered here, so hooks never run twice.
"""
