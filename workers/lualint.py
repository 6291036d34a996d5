"""Lint every Lua script as Redis runs it (constants header + lib.lua + the script) with luacheck.

``python -m workers.lualint``; ``make test`` runs it. Exits non-zero with luacheck's report on any warning.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from workers import scripts

# Redis' Lua 5.1 sandbox: its globals, and the libraries it loads.
GLOBALS = ("redis", "cjson", "cmsgpack", "bit", "struct", "KEYS", "ARGV")


def main() -> int:
    luacheck = shutil.which("luacheck")
    if luacheck is None:
        print("luacheck is missing: apt-get install lua-check (make test installs it)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for name in scripts.names():
            path = Path(tmp) / f"{name}.lua"
            path.write_text(scripts.load(name).text)
            files.append(str(path))
        done = subprocess.run([luacheck, "--std", "lua51", "--codes", "--no-max-line-length",
                               "--read-globals", *GLOBALS, "--", *files], check=False)
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
