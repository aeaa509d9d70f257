#!/usr/bin/env python3
"""Fails when library code returns untyped errors: `anyhow` or `Result<_, String>`.

Libraries return thiserror enums whose variants carry the cause; `anyhow` belongs to
binaries (`main.rs`), the CLI's command modules and tests. Checked: every `src/` file of
the library crates below except `main.rs`; `#[cfg(test)]` blocks are skipped from the line
that opens them.
Usage: lib_errors.py   (from the repository root)
"""
import os
import re
import sys

LIBRARY_CRATES = ["schemas", "connect", "store", "client", "telemetry", "dispatcher",
                  "worker", "devkit"]
STRING_ERROR = re.compile(r"Result<[^;{]*?,\s*String\s*>")


def code_lines(path):
    """Lines before the first `#[cfg(test)]` (test modules sit at the end of a file)."""
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip().startswith("#[cfg(test)]"):
                return
            yield n, line.split("//")[0]


def main():
    found = []
    for crate in LIBRARY_CRATES:
        for root, _, files in os.walk(os.path.join(crate, "src")):
            for f in files:
                if not f.endswith(".rs") or f == "main.rs":
                    continue
                path = os.path.join(root, f)
                for n, line in code_lines(path):
                    if "anyhow" in line:
                        found.append(f"{path}:{n}: anyhow in library code")
                    if STRING_ERROR.search(line):
                        found.append(f"{path}:{n}: Result<_, String> in library code")
    if found:
        print("untyped errors in libraries:")
        print("\n".join("  " + x for x in found))
        sys.exit(1)
    print(f"library errors: typed in {len(LIBRARY_CRATES)} crates")


if __name__ == "__main__":
    main()
