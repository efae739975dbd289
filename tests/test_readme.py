"""The README stays true: its settings table is generated, its commands exist."""

from __future__ import annotations

import re

from qr_sampler.settings_reference import BEGIN, END, render_block
from tests.conftest import REPO_ROOT

README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")


def test_settings_table_matches_the_schema() -> None:
    start, end = README.index(BEGIN), README.index(END) + len(END)
    assert README[start:end] == render_block(), (
        "README settings table is stale: run `python -m qr_sampler.settings_reference README.md`"
    )


def test_first_screen_gives_the_two_fresh_machine_commands_and_ci_runs_the_test_one() -> None:
    first_block = re.search(r"```bash\n(.*?)```", README, re.S)
    assert first_block is not None
    commands = [
        line.split("#")[0].strip() for line in first_block.group(1).splitlines() if line.strip()
    ]
    assert len(commands) == 2
    for command in commands:
        script = command.split()[1]
        assert (REPO_ROOT / script).is_file(), f"README names a missing script: {script}"
    ci = (REPO_ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert commands[1] in ci, "CI must run the README's test command"
