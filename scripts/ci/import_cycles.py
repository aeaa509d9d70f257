#!/usr/bin/env python3
"""Fails when two source files of one crate import each other, directly or through others.

A file's imports are the modules it names through `crate::…` / `super::…` paths (in `use`
items and inline paths). Each crate's `src/` is read on its own: a module path maps to the
file that defines it (`a/b.rs` or `a/b/mod.rs`); a path naming an item inside a module maps
to that module's file. `lib.rs`/`main.rs` are the crate root: they declare modules, so their
edges to children are expected and are not counted, and imports *of* the root are counted
as edges to it. A `#[cfg(test)] mod tests` block may import its parent (`use super::*`): it
is part of the same file, so self-edges are ignored.

Usage: import_cycles.py [CRATE_DIR …]   (default: every workspace member with a src/)
"""
import os
import re
import sys

USE_RE = re.compile(r"\b(crate|super)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
USE_GROUP_RE = re.compile(r"\buse\s+(crate|super)((?:::[A-Za-z_][A-Za-z0-9_]*)*)::\{([^;]*)\};", re.S)


def module_files(src):
    """Maps a module path (tuple of names) to its file, for every .rs under src."""
    mods = {}
    for root, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            path = os.path.join(root, f)
            rel = os.path.relpath(path, src)[:-3].split(os.sep)
            if rel[-1] == "mod":
                rel = rel[:-1]
            if rel in (["lib"], ["main"]):
                rel = []
            if len(rel) >= 1 and rel[0] == "bin":
                continue
            mods[tuple(rel)] = path
    return mods


def file_module(mods, path):
    for m, p in mods.items():
        if p == path:
            return m
    return None


def resolve(mods, base, segs):
    """The file that a path from `base` module through `segs` lands in (longest module prefix)."""
    full = list(base) + list(segs)
    for n in range(len(full), -1, -1):
        if tuple(full[:n]) in mods:
            return mods[tuple(full[:n])]
    return None


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(line.split("//")[0] for line in text.splitlines())


def edges_of(mods, path):
    me = file_module(mods, path)
    text = strip_comments(open(path, encoding="utf-8").read())
    paths = []
    for m in USE_GROUP_RE.finditer(text):
        kind, prefix, inner = m.group(1), m.group(2), m.group(3)
        for item in re.split(r"[,{}]", inner):
            item = item.strip().split(" as ")[0].strip()
            if item and item != "self" and re.match(r"^[A-Za-z_][A-Za-z0-9_:]*$", item):
                paths.append((kind, prefix + "::" + item.split("::")[0]))
            elif item == "self":
                paths.append((kind, prefix))
    for m in USE_RE.finditer(text):
        paths.append((m.group(1), m.group(2)))
    out = set()
    for kind, p in paths:
        segs = [s for s in p.split("::") if s]
        if kind == "crate":
            base = ()
        else:
            # `super` in a file is its module's parent; a nested `mod tests` inside the
            # file uses `super` for the file itself, which resolves to the file (self-edge).
            base = me[:-1] if me else ()
            while segs and segs[0] == "super":
                base = base[:-1]
                segs = segs[1:]
        target = resolve(mods, base, segs)
        if target and target != path:
            out.add(target)
    return out


def find_cycles(graph):
    cycles, index, low, stack, on = [], {}, {}, [], set()
    counter = [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            strong(v)
    return cycles


def crate_dirs():
    import json
    import subprocess

    meta = json.loads(subprocess.check_output(
        ["cargo", "metadata", "--no-deps", "--format-version", "1"]))
    return sorted({os.path.dirname(p["manifest_path"]) for p in meta["packages"]})


def main():
    dirs = sys.argv[1:] or crate_dirs()
    failed = False
    for d in dirs:
        src = os.path.join(d, "src")
        if not os.path.isdir(src):
            continue
        mods = module_files(src)
        roots = {p for m, p in mods.items() if m == ()}
        graph = {}
        for path in mods.values():
            if path in roots:
                continue  # the root declares every module; its edges are not imports
            graph[path] = {t for t in edges_of(mods, path) if t not in roots}
        for comp in find_cycles(graph):
            failed = True
            print(f"import cycle in {d}: " + " <-> ".join(os.path.relpath(c, d) for c in comp))
            for c in comp:
                back = sorted(os.path.relpath(t, d) for t in graph[c] if t in comp)
                print(f"    {os.path.relpath(c, d)} imports {', '.join(back)}")
    if failed:
        sys.exit(1)
    print("import cycles: none")


if __name__ == "__main__":
    main()
