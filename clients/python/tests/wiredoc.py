"""Reads the examples out of docs/wire-format.md, so the tests follow the document: a
changed example there fails a test here until the client agrees with it."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Dict, List

REPO_ROOT = Path(__file__).resolve().parents[3]
DOC = Path(os.environ.get("JETINFER_WIRE_DOC", REPO_ROOT / "docs" / "wire-format.md"))


def text() -> str:
    return DOC.read_text(encoding="utf-8")


def section(heading: str) -> str:
    """The body of the section whose heading line starts with ``heading`` (e.g. "### 9.1")."""
    lines = text().splitlines()
    level = heading.split()[0]
    start = next(i for i, l in enumerate(lines) if l.startswith(heading))
    end = next((i for i in range(start + 1, len(lines))
                if lines[i].startswith("#") and len(lines[i].split()[0]) <= len(level)
                and set(lines[i].split()[0]) == {"#"}), len(lines))
    return "\n".join(lines[start + 1:end])


def hex_example(heading: str) -> bytes:
    """The bytes of the first fenced block of a section: hex before each ``#``, concatenated."""
    body = section(heading)
    block = re.search(r"```\n(.*?)```", body, re.S)
    if block is None:
        raise AssertionError(f"{DOC}: no code block under {heading!r}")
    hexes = [line.split("#", 1)[0] for line in block.group(1).splitlines()]
    return bytes.fromhex("".join("".join(hexes).split()))


def digest_vector() -> Dict[str, str]:
    """Section 8's test vector: ``hashed`` bytes (hex), ``digest`` and ``key``."""
    body = section("## 8.")
    hashed = re.search(r"hashed bytes:(.*?)digest:", body, re.S).group(1)
    return {
        "hashed": "".join(hashed.split()),
        "digest": re.search(r"digest:\s+([0-9a-f]{64})", body).group(1),
        "key": re.search(r"key:\s+(\S+)", body).group(1),
    }


def dtype_table() -> List[Dict[str, str]]:
    """Rows of section 4's dtype table: wire names (``i64 / i32`` rows split), size, numpy."""
    rows = []
    for line in section("## 4.").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or not cells[0].startswith("`") or cells[0] == "`dtype`":
            continue
        names = re.findall(r"`([^`]+)`", cells[0])
        sizes = [s.strip() for s in cells[2].split("/")]
        numpys = [None] if cells[3].startswith("none") else re.findall(r"`([^`]+)`", cells[3])
        for k, name in enumerate(names):
            rows.append({"dtype": name, "size": int(sizes[k] if len(sizes) > 1 else sizes[0]),
                         "numpy": numpys[k] if len(numpys) > 1 else numpys[0]})
    return rows
