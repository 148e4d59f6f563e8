"""The reconciler's version (semantic versioning, see CHANGELOG.md) and the commit it was built
from: the file COMMIT next to this module (the image's build writes it from a build argument),
else, in a git checkout, `git rev-parse HEAD`."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from reconciler import __version__

COMMIT_FILE = Path(__file__).with_name("COMMIT")
_COMMIT_RE = re.compile(r"^[0-9a-f]{7,40}(?:-dirty)?$")


def build_commit(commit_file: Path = COMMIT_FILE) -> str | None:
    """The commit this code was built from (``-dirty`` when a checkout has local changes), or
    None when neither the stamped file nor git can say."""
    try:
        stamped = commit_file.read_text(encoding="utf-8").strip()
    except OSError:
        stamped = ""
    if _COMMIT_RE.match(stamped):
        return stamped
    return _checkout_commit(Path(__file__).resolve().parents[1])


def _checkout_commit(root: Path) -> str | None:
    if not (root / ".git").exists():  # a directory, or a file in a git worktree
        return None

    def git(*argv: str) -> str | None:
        try:
            proc = subprocess.run(
                ["git", "-C", str(root), *argv],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return proc.stdout.strip() if proc.returncode == 0 else None

    head = git("rev-parse", "HEAD")
    if head is None or not _COMMIT_RE.match(head):
        return None
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return f"{head}-dirty" if dirty else head


def version_line(commit_file: Path = COMMIT_FILE) -> str:
    """What `reconciler --version` prints: ``reconciler 0.1.0 (commit 3f2c…)``."""
    return f"reconciler {__version__} (commit {build_commit(commit_file) or 'unknown'})"
