"""scripts/demo.sh takes a relative INPUT and OUTPUT from the directory it is run in.
Run in a copy of the checkout's scripts whose venv setup and CLI are stand-ins that record
what they were given (the real setup would reinstall the package)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_relative_paths_are_the_callers(tmp_path):
    checkout = tmp_path / "checkout"
    (checkout / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "demo.sh", checkout / "scripts" / "demo.sh")
    (checkout / "scripts" / "venv.sh").write_text("prepare_venv() { :; }\n_step() { :; }\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "args"
    cli = bin_dir / "vs-coreml-esrgan"
    cli.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > "{record}"\n')
    cli.chmod(0o755)
    user = tmp_path / "my videos"
    user.mkdir()
    result = subprocess.run(["bash", str(checkout / "scripts" / "demo.sh"), "clip.mkv",
                             "done/clip-x4.mkv", "--source", "builtin"], cwd=user,
                            capture_output=True, text=True,
                            env={"PATH": f"{bin_dir}:/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert record.read_text().splitlines() == [
        "upscale", str(user / "clip.mkv"), str(user / "done" / "clip-x4.mkv"), "--force",
        "--source", "builtin"]
    assert (user / "done").is_dir() and not (checkout / "done").exists()
    assert result.stdout.strip() == f"Done: {user / 'done' / 'clip-x4.mkv'}"
