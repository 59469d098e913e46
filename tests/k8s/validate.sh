#!/usr/bin/env bash
# Validates the Kubernetes manifests in deploy/k8s (or DIR):
#   1. yamllint --strict (the repository's .yamllint), on every file;
#   2. kubernetes-validate --strict against the newest Kubernetes version it
#      knows, on every resource: unknown fields and wrong types fail;
#   (if kubectl is installed, also the output of `kubectl kustomize`);
#   3. the kustomization lists exactly the resources in the folder, and the
#      Deployment keeps the invariants the store needs (one replica,
#      Recreate, a grace period above the drain timeout, a valid manifest).
# Then, without DIR, it checks that it rejects a broken copy of the folder.
# The tools go into a virtualenv in a cache folder, pinned.
#
# Usage: tests/k8s/validate.sh [DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."

KUBERNETES_VALIDATE_VERSION=1.37.0
YAMLLINT_VERSION=1.38.0
venv="${BERTH_VALIDATE_VENV:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/berth/k8s-validate-venv}"

setup_venv() {
    local want="kubernetes-validate==$KUBERNETES_VALIDATE_VERSION yamllint==$YAMLLINT_VERSION"
    if [ "$(cat "$venv/.berth-pins" 2>/dev/null)" != "$want" ]; then
        echo "installing $want into $venv"
        rm -rf "$venv"
        python3 -m venv "$venv"
        # shellcheck disable=SC2086 # two requirement words
        "$venv/bin/pip" install --quiet --disable-pip-version-check $want
        echo "$want" >"$venv/.berth-pins"
    fi
}

# validate DIR: prints what it checks; returns non-zero on any failure.
validate() {
    local dir="$1" failed=0 k8s_version
    local files=("$dir"/*.yaml)
    [ -e "${files[0]}" ] || { echo "FAIL: no .yaml files in $dir"; return 1; }

    echo "--- yamllint --strict"
    "$venv/bin/yamllint" --strict --config-file .yamllint "${files[@]}" || failed=1

    k8s_version="$("$venv/bin/python" -c \
        'import kubernetes_validate.utils as u; print(u.latest_version())')"
    echo "--- kubernetes-validate --strict, Kubernetes $k8s_version"
    local resources=()
    for f in "${files[@]}"; do
        [ "$(basename "$f")" = kustomization.yaml ] || resources+=("$f")
    done
    "$venv/bin/kubernetes-validate" --strict --kubernetes-version "$k8s_version" \
        "${resources[@]}" || failed=1

    if command -v kubectl >/dev/null; then
        echo "--- kubectl kustomize, then kubernetes-validate --strict on the result"
        local rendered
        rendered="$(mktemp --suffix=.yaml)"
        if kubectl kustomize "$dir" >"$rendered"; then
            "$venv/bin/kubernetes-validate" --strict --kubernetes-version "$k8s_version" \
                "$rendered" || failed=1
        else
            failed=1
        fi
        rm -f "$rendered"
    else
        echo "--- (no kubectl here: the kustomization is checked below, not rendered)"
    fi

    echo "--- kustomization and deployment invariants"
    "$venv/bin/python" - "$dir" <<'PY' || failed=1
import pathlib, re, sys, tomllib, yaml

d = pathlib.Path(sys.argv[1])
errors = []
docs = {}
for f in sorted(d.glob("*.yaml")):
    loaded = [x for x in yaml.safe_load_all(f.read_text()) if x is not None]
    if len(loaded) != 1:
        errors.append(f"{f.name}: expected one document, found {len(loaded)}")
        continue
    docs[f.name] = loaded[0]

k = docs.pop("kustomization.yaml", None)
if k is None:
    errors.append("kustomization.yaml is missing")
else:
    if k.get("kind") != "Kustomization":
        errors.append("kustomization.yaml: kind is not Kustomization")
    listed = k.get("resources") or []
    for r in listed:
        if r not in docs:
            errors.append(f"kustomization.yaml lists {r}, which is not in {d}")
    for name in docs:
        if name not in listed:
            errors.append(f"{name} is not listed in kustomization.yaml")

by_kind = {}
for name, doc in docs.items():
    by_kind.setdefault(doc.get("kind"), []).append((name, doc))

deps = by_kind.get("Deployment", [])
if len(deps) != 1:
    errors.append(f"expected one Deployment, found {len(deps)}")
for name, dep in deps:
    spec = dep["spec"]
    pod = spec["template"]["spec"]
    if spec.get("replicas") != 1:
        errors.append(f"{name}: replicas must be 1 (single-writer store), not {spec.get('replicas')}")
    if (spec.get("strategy") or {}).get("type") != "Recreate":
        errors.append(f"{name}: strategy must be Recreate, so two pods never share the store")
    (c,) = pod["containers"]
    args = c.get("args", [])
    drain = 20  # berth's default --drain-timeout-secs
    for i, a in enumerate(args):
        m = re.fullmatch(r"--drain-timeout-secs(?:=(\d+))?", a)
        if m:
            drain = int(m.group(1) or args[i + 1])
    pre_stop = (((c.get("lifecycle") or {}).get("preStop") or {}).get("sleep") or {}).get("seconds", 0)
    grace = pod.get("terminationGracePeriodSeconds", 30)
    if grace <= drain + pre_stop:
        errors.append(f"{name}: terminationGracePeriodSeconds {grace} must exceed preStop {pre_stop} s + drain {drain} s")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        got = ((c.get(probe) or {}).get("httpGet") or {}).get("path")
        if got != path:
            errors.append(f"{name}: {probe} must GET {path}, not {got}")
    sc, psc = c.get("securityContext") or {}, pod.get("securityContext") or {}
    want = {"readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False}
    for key, value in want.items():
        if sc.get(key) is not value:
            errors.append(f"{name}: securityContext.{key} must be {value}")
    if not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
        errors.append(f"{name}: runAsNonRoot must be true")
    if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
        errors.append(f"{name}: capabilities must drop ALL")
    if ((sc.get("seccompProfile") or psc.get("seccompProfile")) or {}).get("type") != "RuntimeDefault":
        errors.append(f"{name}: seccompProfile must be RuntimeDefault")
    if not (c.get("resources") or {}).get("limits") or not (c.get("resources") or {}).get("requests"):
        errors.append(f"{name}: resources need requests and limits")
    mounts = {m["name"]: m["mountPath"] for m in c.get("volumeMounts", [])}
    vols = {v["name"]: v for v in pod.get("volumes", [])}
    manifest_arg = next((a.split("=", 1)[1] for a in args if a.startswith("--manifest=")), None)
    if manifest_arg is None:
        errors.append(f"{name}: berth is not given --manifest=FILE")
    for vname, v in vols.items():
        if vname not in mounts:
            errors.append(f"{name}: volume {vname} is not mounted")
        if "configMap" in v and manifest_arg:
            key = manifest_arg.rsplit("/", 1)[-1]
            cms = [doc for _, doc in by_kind.get("ConfigMap", [])
                   if doc["metadata"]["name"] == v["configMap"]["name"]]
            if not cms:
                errors.append(f"{name}: ConfigMap {v['configMap']['name']} is not in {d}")
            elif key not in cms[0].get("data", {}):
                errors.append(f"ConfigMap {v['configMap']['name']} has no key {key}")
            else:
                try:
                    m = tomllib.loads(cms[0]["data"][key])
                    for cname, comp in m["components"].items():
                        if not comp.get("wasm") or not comp.get("routes"):
                            errors.append(f"manifest: component {cname} needs wasm and routes")
                except (tomllib.TOMLDecodeError, KeyError, AttributeError) as e:
                    errors.append(f"ConfigMap {v['configMap']['name']}: {key} is not a berth manifest: {e}")
    if "persistentVolumeClaim" in vols.get(
        next((n for n, p in mounts.items() if p == "/data"), ""), {}
    ):
        claim = vols[next(n for n, p in mounts.items() if p == "/data")]["persistentVolumeClaim"]["claimName"]
        if not any(doc["metadata"]["name"] == claim for _, doc in by_kind.get("PersistentVolumeClaim", [])):
            errors.append(f"{name}: PersistentVolumeClaim {claim} is not in {d}")
    else:
        errors.append(f"{name}: /data must be a PersistentVolumeClaim")

for _, svc in by_kind.get("Service", []):
    sel = svc["spec"].get("selector") or {}
    labels = deps[0][1]["spec"]["template"]["metadata"].get("labels", {}) if deps else {}
    if not sel or any(labels.get(k) != v for k, v in sel.items()):
        errors.append(f"Service {svc['metadata']['name']}: selector {sel} matches no pod")

for e in errors:
    print(f"FAIL: {e}")
if errors:
    sys.exit(1)
print(f"ok: {len(docs)} resources listed, replicas 1, Recreate, probes, security context, manifest")
PY
    return "$failed"
}

setup_venv
target="${1:-deploy/k8s}"
echo "=== validating $target"
if ! validate "$target"; then
    echo "FAIL: $target has invalid manifests"
    exit 1
fi
echo "PASS: $target"

if [ $# -eq 0 ]; then
    # The validator must reject what is wrong: break a copy three ways.
    scratch="$(mktemp -d)"
    trap 'rm -rf "$scratch"' EXIT
    for breakage in unknown-field wrong-type two-replicas; do
        rm -rf "$scratch/k8s" && cp -r "$target" "$scratch/k8s"
        case "$breakage" in
            unknown-field) sed -i 's/^  strategy:/  stratgy:/' "$scratch/k8s/deployment.yaml" ;;
            wrong-type) sed -i 's/containerPort: 8080/containerPort: "eighty"/' "$scratch/k8s/deployment.yaml" ;;
            two-replicas) sed -i 's/^  replicas: 1/  replicas: 2/' "$scratch/k8s/deployment.yaml" ;;
        esac
        if cmp -s "$target/deployment.yaml" "$scratch/k8s/deployment.yaml"; then
            echo "FAIL: self-check $breakage did not change the copy"
            exit 1
        fi
        if validate "$scratch/k8s" >"$scratch/out" 2>&1; then
            cat "$scratch/out"
            echo "FAIL: a copy with $breakage passed validation"
            exit 1
        fi
        echo "ok: a copy with $breakage is rejected: $(grep -m1 -iE 'error|fail' "$scratch/out" | cut -c1-160)"
    done
fi
echo "PASS: Kubernetes manifests"
