#!/usr/bin/env bash
# Validates the Kubernetes manifests of deploy/k8s (or the folder given) offline:
#   - every Kubernetes object against the Kubernetes JSON schemas bundled in the PyPI package
#     kubernetes-validate, strict (an unknown or misspelt field fails), for Kubernetes
#     $JETINFER_K8S_VERSION (default 1.31.0);
#   - the KEDA ScaledObjects and the kustomization against deploy/k8s/schemas/*.json (strict);
#   - an object of any other kind fails (kubernetes-validate itself only warns);
#   - the kustomization lists every manifest of the folder, and only existing files.
# Exit 0 when all pass; otherwise each failure is printed (file, object, where, why) and the
# exit status is 1. scripts/setup.sh installs the package into .venv; nothing is fetched here.
#
#   scripts/validate-k8s.sh [folder]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dir="${1:-$root/deploy/k8s}"
py="${JETINFER_VENV:-$root/.venv}/bin/python"
[ -x "$py" ] || { echo "validate-k8s: $py missing: run scripts/setup.sh" >&2; exit 2; }
"$py" -c 'import kubernetes_validate, jsonschema, yaml' 2>/dev/null \
  || { echo "validate-k8s: kubernetes-validate missing in the virtualenv: run scripts/setup.sh" >&2; exit 2; }
exec "$py" - "$dir" "$root/deploy/k8s/schemas" "${JETINFER_K8S_VERSION:-1.31.0}" <<'PY'
import json, pathlib, sys
import jsonschema, kubernetes_validate, yaml

folder, schemas, version = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3]
own = {  # (apiVersion group, kind) -> schema file; everything else must be a Kubernetes kind
    ("keda.sh", "ScaledObject"): "scaledobject.json",
    ("kustomize.config.k8s.io", "Kustomization"): "kustomization.json",
}
failures, checked = [], 0

def fail(where, why):
    failures.append(f"{where}: {why}")

files = sorted(p for p in folder.glob("*.yaml"))
if not files:
    fail(folder, "no *.yaml manifests")
for path in files:
    name = path.name
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except yaml.YAMLError as e:
        fail(name, f"not YAML: {e}")
        continue
    for doc in docs:
        checked += 1
        if not isinstance(doc, dict) or "apiVersion" not in doc or "kind" not in doc:
            fail(name, "an object without apiVersion and kind")
            continue
        obj = f"{doc['kind']}/{(doc.get('metadata') or {}).get('name', '?')}"
        group = doc["apiVersion"].split("/")[0] if "/" in doc["apiVersion"] else ""
        schema_file = own.get((group, doc["kind"]))
        if schema_file:
            schema = json.loads((schemas / schema_file).read_text())
            validator = jsonschema.Draft202012Validator(schema)
            for e in sorted(validator.iter_errors(doc), key=lambda e: list(e.path)):
                fail(f"{name} {obj}", f"at {'/'.join(map(str, e.path)) or '.'}: {e.message}")
            if doc["kind"] == "Kustomization":
                listed = set(doc.get("resources", []))
                for r in sorted(listed):
                    if not (folder / r).is_file():
                        fail(f"{name}", f"resource {r} does not exist")
                for p in files:
                    if p.name != name and p.name not in listed:
                        fail(f"{name}", f"{p.name} is not listed in resources")
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            fail(f"{name} {obj}", f"no schema for {doc['apiVersion']} {doc['kind']} in Kubernetes {version} (nor in {schemas})")
        except kubernetes_validate.ValidationError as e:
            where = "/".join(map(str, e.path)) or "."
            fail(f"{name} {obj}", f"at {where}: {e.message}")
for f in failures:
    print(f"FAIL {f}")
print(f"validate-k8s: {checked} objects in {len(files)} files, {len(failures)} failures (Kubernetes {version})")
sys.exit(1 if failures else 0)
PY
