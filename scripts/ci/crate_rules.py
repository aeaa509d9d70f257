#!/usr/bin/env python3
"""Fails when the crate graph breaks the layout rules of docs/architecture.md.

Reads `cargo metadata` (normal and build dependencies; dev-dependencies are test-only and
checked separately where a rule says so) and checks:
  1. each jetinfer crate depends only on the jetinfer crates its row allows;
  2. the client library's default features pull in only its allowed external crates;
  3. only jetinfer-worker links libtorch (tch / torch-sys), anywhere in its tree.
Usage: crate_rules.py   (from anywhere inside the workspace)
"""
import json
import subprocess
import sys

# Which jetinfer crates each crate may depend on (normal + build edges).
ALLOWED = {
    "jetinfer-schemas": set(),
    "jetinfer-connect": {"jetinfer-schemas"},
    "jetinfer-store": {"jetinfer-schemas"},
    # The model registry (NATS KV): read by the dispatcher and the worker (--registry), written by the CLI.
    # Its own crate so the client library stays free of it and the CLI need not pull the
    # dispatcher; it depends on schemas and async-nats only.
    "jetinfer-registry": {"jetinfer-schemas"},
    "jetinfer-client": {"jetinfer-schemas", "jetinfer-connect", "jetinfer-store"},
    "jetinfer-telemetry": set(),
    "jetinfer-dispatcher": {"jetinfer-schemas", "jetinfer-connect", "jetinfer-store", "jetinfer-telemetry", "jetinfer-registry"},
    "jetinfer-worker": {"jetinfer-schemas", "jetinfer-connect", "jetinfer-store", "jetinfer-telemetry", "jetinfer-registry"},
    "jetinfer-devkit": {"jetinfer-schemas", "jetinfer-connect", "jetinfer-store", "jetinfer-client"},
    "jetinfer-cli": {"jetinfer-schemas", "jetinfer-connect", "jetinfer-client", "jetinfer-telemetry", "jetinfer-devkit", "jetinfer-registry"},
    "jetinfer-tests": {"jetinfer-schemas", "jetinfer-client", "jetinfer-devkit", "jetinfer-telemetry"},
}
# The external crates the client library's default features may depend on directly.
CLIENT_DEFAULT_DEPS = {
    "async-nats", "redis", "deadpool-redis", "tokio", "futures", "bytes", "serde",
    "rmp-serde", "thiserror", "tracing",
}
# Crates that must never appear in the client library's default tree, at any depth.
CLIENT_NEVER = {
    "clap", "axum", "tonic", "opentelemetry-otlp", "metrics-exporter-prometheus",
    "indicatif", "hdrhistogram", "tch", "torch-sys",
}
LIBTORCH = {"tch", "torch-sys"}


def metadata(*args):
    host = subprocess.check_output(["rustc", "-vV"], text=True).split("host: ")[1].split()[0]
    out = subprocess.check_output(
        ["cargo", "metadata", "--format-version", "1", "--filter-platform", host, *args])
    return json.loads(out)


def normal_deps(node):
    return [d for d in node["deps"]
            if any(k["kind"] in (None, "build") for k in d["dep_kinds"])]


def closure(nodes, start):
    seen, todo = set(), [start]
    while todo:
        n = todo.pop()
        for d in normal_deps(nodes[n]):
            if d["pkg"] not in seen:
                seen.add(d["pkg"])
                todo.append(d["pkg"])
    return seen


def main():
    errors = []
    meta = metadata()
    names = {p["id"]: p["name"] for p in meta["packages"]}
    members = {names[m] for m in meta["workspace_members"]}
    nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}
    for unknown in sorted(members - ALLOWED.keys()):
        errors.append(f"{unknown}: not in the layout table of scripts/ci/crate_rules.py")
    for pid, node in nodes.items():
        name = names[pid]
        if name not in members:
            continue
        for d in normal_deps(node):
            dep = names[d["pkg"]]
            if dep in members and dep not in ALLOWED.get(name, set()):
                errors.append(f"{name} -> {dep}: forbidden edge")
        if name != "jetinfer-worker":
            linked = {names[p] for p in closure(nodes, pid)} & LIBTORCH
            if linked:
                errors.append(f"{name} links libtorch through {sorted(linked)}")

    # The client alone, with its default features only: `cargo tree -p` resolves features
    # for the selected package (cargo metadata would unify them with what the CLI turns on).
    def client_tree(depth):
        out = subprocess.check_output(
            ["cargo", "tree", "-q", "-p", "jetinfer-client", "-e", "normal,build",
             "--prefix", "none", "--format", "{p}", "--depth", str(depth)], text=True)
        return {line.split()[0] for line in out.splitlines()[1:] if line.strip()}

    external = {d for d in client_tree(1) if not d.startswith("jetinfer-")}
    for extra in sorted(external - CLIENT_DEFAULT_DEPS):
        errors.append(f"jetinfer-client (default features) depends on {extra}")
    for banned in sorted(client_tree(1000) & CLIENT_NEVER):
        errors.append(f"jetinfer-client (default features) pulls in {banned}")

    if errors:
        print("crate layout rules broken:")
        for e in errors:
            print("  " + e)
        sys.exit(1)
    print(f"crate layout rules: {len(members)} crates, every edge allowed")


if __name__ == "__main__":
    main()
