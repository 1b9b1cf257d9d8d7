"""Build hook: compile rollout/logs/_linescan.c, the scanner's C line classifier.

No setuptools needed: the compiler and flags come from the running Python's
sysconfig. For an editable install the module is built next to its source; for a
wheel it is added as an artifact and the wheel gets a platform tag. Without a C
compiler the build goes on and ``rollout scan`` uses its pure-Python path (the
same results, several times slower); ``rollout scan --json`` says which one ran.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import sysconfig
from pathlib import Path

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

SOURCE = Path("rollout/logs/_linescan.c")


def compile_linescan(root: Path) -> Path | None:
    """Compile the extension in place; its path, or None (with a warning) if that failed."""
    target = root / SOURCE.with_name("_linescan" + sysconfig.get_config_var("EXT_SUFFIX"))
    source = root / SOURCE
    if target.exists() and target.stat().st_mtime >= source.stat().st_mtime:
        return target
    cc = shlex.split(sysconfig.get_config_var("CC") or "cc")
    command = [
        *cc,
        "-O2",
        "-shared",
        "-fPIC",
        "-Wall",
        f"-I{sysconfig.get_paths()['include']}",
        str(source),
        "-o",
        str(target),
    ]
    try:
        subprocess.run(command, check=True, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        print(
            f"warning: could not compile {SOURCE} ({detail.strip()[:500]}); "
            "rollout scan will use its slower pure-Python path",
            file=sys.stderr,
        )
        return None
    return target


class LinescanBuildHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict) -> None:
        if self.target_name != "wheel":
            return
        built = compile_linescan(Path(self.root))
        if built is None:
            return
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
        if version != "editable":
            build_data["force_include"][str(built)] = str(built.relative_to(self.root))
