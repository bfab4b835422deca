"""The layer contract (pyproject.toml ``[tool.importlinter]``): formats -> contract -> host ->
gateware -> simulation -> front, each layer importing only from the layers below it.

import-linter finds a package's modules below the package's own directory, but ``bcq.hw``,
``bcq.sw`` and ``bcq.sim`` live in the top-level folders ``hw/``, ``sw/`` and ``sim/``
(setuptools ``package-dir``). The check therefore runs on the tree as it is installed: the
folders copied under one ``bcq/`` directory, exactly as the wheel lays them out.
"""
from pathlib import Path
import shutil
import subprocess
import sys
import tomllib

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"


def installed_tree(dest: Path):
    """Copy each package folder to where ``package-dir`` installs it; returns ``dest``."""
    package_dir = tomllib.loads(PYPROJECT.read_text())["tool"]["setuptools"]["package-dir"]
    for name, folder in sorted(package_dir.items(), key=lambda kv: kv[0].count(".")):
        target = dest.joinpath(*name.split("."))
        shutil.copytree(ROOT / folder, target, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copytree(ROOT / "bench", dest / "bench", ignore=shutil.ignore_patterns("__pycache__", "data"))
    shutil.copy(PYPROJECT, dest / "pyproject.toml")
    return dest


def lint(tree: Path):
    exe = Path(sys.executable).parent / "lint-imports"
    return subprocess.run([str(exe), "--no-cache"], cwd=tree, capture_output=True, text=True,
                          env={"PYTHONPATH": str(tree), "PATH": str(exe.parent)})


def test_layers_contract_is_kept(tmp_path):
    r = lint(installed_tree(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Contracts: 1 kept, 0 broken." in r.stdout


def test_an_upward_import_breaks_the_contract(tmp_path):
    tree = installed_tree(tmp_path)
    # The golden model reaching up into the gateware is exactly what the contract forbids.
    golden = tree / "bcq" / "sw" / "formats" / "golden.py"
    golden.write_text(golden.read_text() + "\nimport bcq.hw.bcq_dot  # noqa\n")
    r = lint(tree)
    assert r.returncode != 0
    assert "Contracts: 0 kept, 1 broken." in r.stdout
    assert "bcq.sw.formats.golden -> bcq.hw.bcq_dot" in r.stdout
