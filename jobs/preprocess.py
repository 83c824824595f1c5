"""`axolotl preprocess CONFIG`, preceded in the same process by our strict check of the config.

Usage: python -m jobs.preprocess CONFIG

Importing Axolotl costs 6-10 s on two cores. `jobs train` used to pay it twice before any token was
processed: once in the launcher for the strict key check and Axolotl's validator, once more in
`axolotl preprocess`. Here the check runs where Axolotl is imported anyway, then Axolotl's own CLI
(`axolotl.cli.main`, what the `axolotl` command runs) preprocesses as usual.

The outcome of the check is written next to the config as config-check.json, {"ok": true} or
{"ok": false, "error": "..."}, so the launcher can register the run only once the config is accepted
and report a rejection as bad input (exit 2): nothing is tokenized then.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

CHECK_FILE = "config-check.json"


def write_check(config: Path, result: dict) -> None:
    tmp = config.with_name(f".{CHECK_FILE}.tmp")
    tmp.write_text(json.dumps(result) + "\n", "utf-8")
    tmp.replace(config.with_name(CHECK_FILE))


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    import yaml

    from axolotl_configs import validate
    from brightrun.errors import ConfigError

    config = Path(argv[0])
    try:
        validate.check(yaml.safe_load(config.read_text("utf-8")))
    except ConfigError as exc:
        write_check(config, {"ok": False, "error": str(exc)})
        print(f"error: {config}: {exc}", file=sys.stderr)
        return 2
    write_check(config, {"ok": True})
    from axolotl.cli.main import main as axolotl_main

    sys.argv = ["axolotl", "preprocess", str(config)]
    try:
        axolotl_main()
    except SystemExit as done:  # click ends the process this way, also on success
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
