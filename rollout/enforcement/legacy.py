"""The legacy POP-before-SMTP client map, retired by the final step.

Two ways, by ``enforcement.retire``: ``empty`` replaces the map by an empty one
(temp file, ``postmap``, rename: the same atomic swap as our own map; the files in
force are kept for ``undo``), ``check`` only verifies with ``postconf`` that no
``smtpd_*_restrictions`` still references it (the operator edits main.cf). Either
way the daemon that feeds the map (pop-before-smtp, poprelayd, DRAC, whoson) must be
stopped first, or it would write the addresses back: a running one is named.

Undo puts the map back (``empty``: the kept files; ``check``: ``check_client_access <map>``
into ``smtpd_recipient_restrictions`` in main.cf with ``postconf -e``, then Postfix reloads).
The caller records an intent beside the map before any of these changes (``files.write_intent``)
so that a process killed before the database recorded the change leaves a trace to repair.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import EnforcementError
from .files import fsync_dir, write_synced
from .postfix import INDEX_SUFFIX

POSTCONF_TIMEOUT = 60
RESTRICTIONS = re.compile(r"^(?:(?P<service>\S+/\S+)/)?(?P<name>smtpd_\w+_restrictions)\s*=\s*(?P<value>.*)$")
INTERPRETERS = ("perl", "python", "python3", "sh", "bash", "ruby")
RECIPIENT_RESTRICTIONS = "smtpd_recipient_restrictions"


@dataclass(frozen=True)
class LegacyMap:
    type: str
    path: Path

    @property
    def spec(self) -> str:
        return f"{self.type}:{self.path}"

    @property
    def index(self) -> Path:
        return self.path.with_name(self.path.name + INDEX_SUFFIX[self.type])

    @property
    def saved(self) -> Path:
        """Where the map in force is kept when it is emptied (what ``undo`` restores)."""
        return self.path.with_name(self.path.name + ".before-retire")


def parse_legacy_map(spec: str, default_type: str) -> LegacyMap:
    """``hash:/etc/postfix/pop-before-smtp`` (as in main.cf), or a bare path of ``default_type``."""
    kind, sep, rest = spec.partition(":")
    if sep and kind in INDEX_SUFFIX:
        return LegacyMap(kind, Path(rest))
    if sep and re.fullmatch(r"[a-z]+", kind):
        raise EnforcementError(
            f"enforcement.legacy_map {spec!r}: map type {kind!r} is not one of {', '.join(INDEX_SUFFIX)}"
        )
    return LegacyMap(default_type, Path(spec))


@dataclass(frozen=True)
class Writer:
    pid: int
    name: str
    how: str  # "is running" | "has the map open for writing"

    def describe(self) -> str:
        return f"{self.name} (pid {self.pid}) {self.how}"


def running_writers(legacy: LegacyMap, names: Sequence[str], proc: Path = Path("/proc")) -> list[Writer]:
    """Processes that feed the map: a known daemon by name, or any process holding its files open for writing."""
    targets = {str(legacy.path), str(legacy.index)}
    found: list[Writer] = []
    for entry in proc.iterdir() if proc.is_dir() else ():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            name = _process_name(entry, set(names))
            if name:
                found.append(Writer(int(entry.name), name, "is running"))
            elif _writes_any(entry, targets):
                found.append(
                    Writer(int(entry.name), (entry / "comm").read_text().strip(), "has the map open for writing")
                )
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


def _process_name(entry: Path, names: set[str]) -> str | None:
    argv = [a for a in (entry / "cmdline").read_bytes().decode(errors="replace").split("\0") if a]
    candidates = [(entry / "comm").read_text().strip()]
    if argv:
        program = os.path.basename(argv[0])
        candidates.append(program)
        if program.rstrip("0123456789.") in INTERPRETERS:  # a script: its own name follows the options
            candidates += [os.path.basename(a) for a in argv[1:3] if not a.startswith("-")]
    return next((c for c in candidates if c in names), None)


def _writes_any(entry: Path, targets: set[str]) -> bool:
    for fd in (entry / "fd").iterdir():
        try:
            if os.readlink(fd) in targets and _open_for_writing(entry / "fdinfo" / fd.name):
                return True
        except OSError:
            continue
    return False


def _open_for_writing(fdinfo: Path) -> bool:
    """Postfix's own daemons hold the map open read-only; a writer has O_WRONLY or O_RDWR."""
    for line in fdinfo.read_text().splitlines():
        if line.startswith("flags:"):
            return int(line.split()[1], 8) & (os.O_WRONLY | os.O_RDWR) != 0
    return False


def count_entries(legacy: LegacyMap) -> int:
    """Lines of the map's source, when there is one (daemons such as pop-before-smtp write only the index)."""
    try:
        return sum(
            1
            for line in legacy.path.read_text(errors="replace").splitlines()
            if line.strip() and not line.startswith("#")
        )
    except OSError:
        return 0


def keep(legacy: LegacyMap) -> Path:
    """Copy the files in force to ``legacy.saved`` (what ``undo`` restores), before the map is emptied."""
    if not legacy.path.exists() and not legacy.index.exists():
        raise EnforcementError(
            f"{legacy.spec} does not exist (neither {legacy.path} nor {legacy.index}): check enforcement.legacy_map"
        )
    try:
        _keep(legacy)
    except OSError as exc:
        raise EnforcementError(
            f"cannot keep a copy of {legacy.spec} in {legacy.saved}: {exc}; it is unchanged"
        ) from None
    return legacy.saved


def publish_empty(legacy: LegacyMap, postmap_command: str) -> None:
    """Replace the map by an empty one atomically (temp file, ``postmap``, index then source renamed)."""
    for stale in legacy.path.parent.glob(f".{legacy.path.name}.retire-*"):  # a killed run's, never in force
        stale.unlink(missing_ok=True)
    tmp = legacy.path.with_name(f".{legacy.path.name}.retire-{os.getpid()}")
    tmp_index = tmp.with_name(tmp.name + INDEX_SUFFIX[legacy.type])
    try:
        write_synced(
            tmp, "# retired by rollout: SMTP-after-POP is switched off for everyone; `rollout undo` restores it\n"
        )
        _run(shlex.split(postmap_command) + [f"{legacy.type}:{tmp}"], f"{legacy.spec} is unchanged")
        try:
            os.replace(tmp_index, legacy.index)  # the index first: it is what Postfix reads
        except OSError as exc:
            raise EnforcementError(f"cannot replace {legacy.index}: {exc}; {legacy.spec} is unchanged") from None
        try:
            os.replace(tmp, legacy.path)
            fsync_dir(legacy.path.parent)
        except OSError as exc:
            raise EnforcementError(f"cannot replace {legacy.path}: {exc}", unchanged=False) from None
    finally:
        tmp.unlink(missing_ok=True)
        tmp_index.unlink(missing_ok=True)


def _keep(legacy: LegacyMap) -> None:
    legacy.saved.mkdir(exist_ok=True)
    for old in legacy.saved.iterdir():
        old.unlink()
    for f in (legacy.path, legacy.index):
        if f.exists():
            shutil.copy2(f, legacy.saved / f.name)


def restore(legacy: LegacyMap, saved: Path) -> None:
    """Put the kept files back, each by copy and rename (the index first)."""
    files = [saved / legacy.index.name, saved / legacy.path.name]
    if not any(f.exists() for f in files):
        raise EnforcementError(
            f"nothing to restore: {saved} holds no copy of {legacy.spec}; the map in force is unchanged"
        )
    for kept, target in zip(files, (legacy.index, legacy.path), strict=True):
        if kept.exists():
            tmp = target.with_name(f".{target.name}.restore-{os.getpid()}")
            shutil.copy2(kept, tmp)
            os.replace(tmp, target)
        else:  # the daemon kept only an index: the empty source written by the final step goes
            target.unlink(missing_ok=True)
    fsync_dir(legacy.path.parent)


@dataclass(frozen=True)
class MainCfEdit:
    """One parameter of main.cf changed with ``postconf -e``: its value before and after."""

    parameter: str
    before: str
    after: str


def put_back_edit(legacy: LegacyMap, postconf_command: str, our_map: str) -> MainCfEdit | None:
    """Mode ``check``, undo: how ``check_client_access <map>`` goes back into smtpd_recipient_restrictions in main.cf
    (None: main.cf names the map already). It goes right after our own map, where the setup puts it, or else just
    before ``reject_unauth_destination`` (the legacy map must come before it to let a logged-in IP relay)."""
    if restriction_references(legacy, postconf_command):
        return None
    unchanged = "the final step is not undone"
    before = _run(shlex.split(postconf_command) + ["-h", RECIPIENT_RESTRICTIONS], unchanged).strip()
    element = f"check_client_access {legacy.spec}"
    tokens = list(re.finditer(r"[^\s,]+", before))
    ours = [t for t in tokens if t.group().split(":", 1)[-1] == our_map]
    final = [t for t in tokens if t.group() == "reject_unauth_destination"]
    if ours:
        after = f"{before[: ours[0].end()]}, {element}{before[ours[0].end() :]}"
    elif final:
        after = f"{before[: final[0].start()]}{element}, {before[final[0].start() :]}"
    else:
        raise EnforcementError(
            f"cannot put `{element}` back: {RECIPIENT_RESTRICTIONS} in main.cf names neither our map {our_map} nor "
            f"reject_unauth_destination; add it by hand, `postfix reload`, then `rollout undo` again; {unchanged}"
        )
    return MainCfEdit(RECIPIENT_RESTRICTIONS, before, after)


def apply_edit(edit: MainCfEdit, value: str, postconf_command: str, reload_command: str) -> None:
    """Set ``edit.parameter`` to ``value`` in main.cf and have Postfix reload it."""
    _run(shlex.split(postconf_command) + ["-e", f"{edit.parameter} = {value}"], "main.cf is unchanged")
    try:
        _run(shlex.split(reload_command), f"main.cf has the new {edit.parameter} but Postfix has not reloaded it")
    except EnforcementError as exc:
        raise EnforcementError(str(exc), unchanged=False) from None


def current_value(parameter: str, postconf_command: str) -> str:
    return _run(shlex.split(postconf_command) + ["-h", parameter], "nothing was changed").strip()


@dataclass(frozen=True)
class Reference:
    where: str  # "main.cf" or "master.cf service smtp/inet"
    parameter: str
    element: str  # what to remove, e.g. "check_client_access hash:/etc/postfix/pop-before-smtp"
    line: str  # the parameter as postconf prints it

    def describe(self) -> str:
        return f"remove `{self.element}` from {self.parameter} in {self.where} (postconf: {self.line})"


def restriction_references(legacy: LegacyMap, postconf_command: str) -> list[Reference]:
    """Every smtpd_*_restrictions element (main.cf and master.cf overrides, $names expanded) naming the map."""
    argv = shlex.split(postconf_command)
    found: list[Reference] = []
    for extra, where in ((["-x"], "main.cf"), (["-P", "-x"], "master.cf")):
        for line in _run(argv + extra, "nothing was retired").splitlines():
            match = RESTRICTIONS.match(line.strip())
            if not match:
                continue
            place = f"master.cf service {match['service']}" if match["service"] else where
            for element in _elements_naming(match["value"], str(legacy.path)):
                found.append(Reference(place, match["name"], element, line.strip()))
    return found


def _elements_naming(value: str, path: str) -> list[str]:
    tokens = [t for t in re.split(r"[\s,]+", value) if t]
    elements = []
    for i, token in enumerate(tokens):
        if token.split(":", 1)[-1] == path or token == path:
            before = tokens[i - 1] if i else ""
            elements.append(f"{before} {token}" if before.startswith("check_") else token)
    return elements


def _run(argv: list[str], unchanged: str) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=POSTCONF_TIMEOUT, check=False)
    except FileNotFoundError:
        raise EnforcementError(f"cannot run {argv[0]!r}; {unchanged}") from None
    except subprocess.TimeoutExpired:
        raise EnforcementError(f"{' '.join(argv)} took longer than {POSTCONF_TIMEOUT} s; {unchanged}") from None
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
        raise EnforcementError(f"{' '.join(argv)} failed: {detail[0]}; {unchanged}")
    return done.stdout
