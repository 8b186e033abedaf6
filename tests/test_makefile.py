"""``make test`` installs Debian's Chromium with apt-get where it is missing; without apt-get it stops at once
with one line that says what to do."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_browser_target_without_chromium_or_apt_get_fails_with_one_line(tmp_path):
    bin_dir = tmp_path / "bin"  # a PATH with neither chromium nor apt-get (nor sudo)
    bin_dir.mkdir()
    os.symlink(shutil.which("id"), bin_dir / "id")
    make = shutil.which("make")
    assert make, "make is needed to build and test the project"
    proc = subprocess.run([make, "-s", "-C", str(ROOT), "browser"], env={"PATH": str(bin_dir)},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    ours = [line for line in proc.stderr.splitlines() if not line.startswith("make")]
    assert len(ours) == 1, proc.stderr
    assert "chromium not found and apt-get is not available" in ours[0]
    assert "install it with your package manager" in ours[0]
