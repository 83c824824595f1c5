"""The README's first screen holds two commands that must stay true: files and recipes that exist."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

FIRST_SCREEN_LINES = 25


def first_screen_commands() -> list[str]:
    head = "\n".join((ROOT / "README.md").read_text("utf-8").splitlines()[:FIRST_SCREEN_LINES])
    return re.findall(r"```bash\n(.+?)\n```", head, flags=re.S)


def just_recipes() -> set[str]:
    just = Path(sys.executable).parent / "just"
    out = subprocess.run([str(just), "--summary"], cwd=ROOT, capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_two_commands_on_the_first_screen():
    setup_and_demo, tests = first_screen_commands()
    assert setup_and_demo.endswith("just demo")
    assert tests.endswith("just test")


def test_commands_name_files_and_recipes_that_exist():
    recipes = just_recipes()
    for command in first_screen_commands():
        for step in command.split("&&"):
            words = shlex.split(step)
            if words[0] == "bash":
                assert (ROOT / words[1]).is_file(), words
            else:
                assert words[0] == ".venv/bin/just", words  # just is installed into the venv by setup.sh
                assert words[1] in recipes, f"no recipe {words[1]!r} in the justfile"


def test_ci_runs_the_readme_test_command():
    _, tests = first_screen_commands()
    assert tests in (ROOT / ".ci" / "run").read_text("utf-8")


def test_demo_recipe_names_the_committed_demo_file():
    justfile = (ROOT / "justfile").read_text("utf-8")
    for path in re.findall(r"data/demo/[\w./-]+\.json", justfile):
        assert (ROOT / path).is_file(), path
