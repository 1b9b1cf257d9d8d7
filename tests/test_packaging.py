"""The wheel ships templates/ and migrations/, and an installed wheel migrates a database."""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from .conftest import REPO


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(REPO)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"building the wheel failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    (path,) = out.glob("rollout-*.whl")
    return path


@pytest.mark.slow
def test_wheel_contains_templates_and_migrations(wheel: Path) -> None:
    """The data directories are inside the package in the wheel."""
    names = zipfile.ZipFile(wheel).namelist()
    assert "rollout/_data/migrations/env.py" in names
    assert any(n.startswith("rollout/_data/migrations/versions/0001_") for n in names)
    assert any(n.startswith("rollout/_data/templates/") for n in names)
    assert {"rollout/_data/templates/web/style.css", "rollout/_data/templates/web/customer.html.j2"} <= set(
        names
    )  # rollout web
    assert not any("__pycache__" in n for n in names)


@pytest.mark.slow
def test_wheel_ships_its_types(wheel: Path) -> None:
    """A type checker sees an installed rollout's types (PEP 561), the C classifier's stub with them."""
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"rollout/py.typed", "rollout/logs/_linescan.pyi"} <= names


@pytest.mark.slow
def test_installed_wheel_runs_from_an_unrelated_directory(wheel: Path, tmp_path: Path) -> None:
    """pip install of the wheel, then `rollout db upgrade`, import and stats work outside the checkout."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)]  # dependencies from the registry
    proc = subprocess.run(pip, timeout=600, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    work = tmp_path / "elsewhere"
    work.mkdir()
    (work / "inv.csv").write_text(
        "mailbox,customer_id,customer_email,customer_name,locale\nanna@example.de,K1,k@example.org,A,de\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROLLOUT_") and k != "PYTHONPATH"}
    env["ROLLOUT_DATABASE_URL"] = f"sqlite:///{work / 'r.db'}"
    rollout = str(venv / "bin" / "rollout")

    def call(*args: str) -> str:
        proc = subprocess.run([rollout, *args], cwd=work, env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import rollout.resources as r; print(r.migrations_dir())"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert str(venv) in where and "_data" in where  # the wheel's copy, not the checkout
    call("db", "upgrade")
    call("inventory", "import", "inv.csv")
    assert json.loads(call("inventory", "stats", "--json"))["mailboxes"] == 1
    desk = subprocess.run(  # the support desk finds its templates and stylesheet in the wheel
        [
            str(venv / "bin" / "python"),
            "-c",
            "from rollout.support.web.app import SupportDesk; from rollout.runtime import Runtime; "
            "from rollout.config import load_settings; "
            "d = SupportDesk(Runtime(load_settings()), b'k'); print(len(d.stylesheet))",
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert desk.returncode == 0 and int(desk.stdout) > 1000, desk.stderr
