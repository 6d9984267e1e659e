"""`python -m actors ...` is the `rig` command: `python -m actors run MODULE:CLASS`."""

import sys

from actors.cli.main import main

if __name__ == "__main__":
    args = sys.argv[1:]
    # `python -m actors run X` is short for `rig actor run X`.
    if args[:1] == ["run"]:
        args = ["actor", *args]
    main(args)
