"""The distribution installs one top-level package, ``shiftcheck``, and coexists with PyPI's
``fixtures`` (testtools, OpenStack) in one environment."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_a_fresh_venv_holds_shiftcheck_next_to_pypi_fixtures(tmp_path):
    wheels = tmp_path / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(wheels), str(ROOT)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-2000:]
    wheel = next(wheels.glob("shiftcheck-*.whl"))
    import zipfile

    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist() if not name.startswith("shiftcheck-")}
    assert tops == {"shiftcheck"}, tops  # no top-level probes/ or fixtures/ any more
    env = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env)
    py = env / "bin" / "python"
    install = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", str(wheel), "fixtures"],
                             capture_output=True, text=True)
    assert install.returncode == 0, install.stderr[-2000:]
    code = ("import fixtures, shiftcheck.fixtures, shiftcheck.probes; "
            "print(hasattr(fixtures, 'Fixture'), shiftcheck.fixtures.__name__, fixtures.__file__)")
    out = subprocess.run([str(py), "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    has_fixture_class, ours, theirs = out.stdout.split()
    assert has_fixture_class == "True"  # `import fixtures` is PyPI's testtools library
    assert ours == "shiftcheck.fixtures" and "site-packages/fixtures" in theirs


def test_the_entry_point_names_the_namespaced_plugin():
    from importlib import metadata

    eps = [ep for ep in metadata.entry_points(group="pytest11") if ep.name == "shiftcheck"]
    assert [ep.value for ep in eps] == ["shiftcheck.fixtures.plugin"]
    scripts = [ep for ep in metadata.entry_points(group="console_scripts") if ep.name == "shiftcheck"]
    assert [ep.value for ep in scripts] == ["shiftcheck.cli:main"]
