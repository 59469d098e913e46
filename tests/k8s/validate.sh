#!/usr/bin/env bash
# Validates the Kubernetes manifests in deploy/k8s (or ROOT): the shared
# base/ and the variants built on it, embedded/, scale-out/ and dev/ (which
# is scale-out/ with a dev database and broker).
#   1. yamllint --strict (the repository's .yamllint), on every file;
#   2. each kustomization lists exactly the files in its folder, and there
#      is no variant this script does not know;
#   3. each variant is rendered as `kubectl apply -k` renders it: by
#      `kubectl kustomize` where kubectl is installed (the project's
#      machines have it), else by tests/k8s/kustomize.py, a small renderer of
#      just the kustomize features used here. Where kubectl is there, the two
#      renderings must agree, so the fallback cannot drift;
#   4. kubernetes-validate --strict on each rendering, against the newest
#      Kubernetes version it knows: unknown fields and wrong types fail;
#   5. tests/k8s/invariants.py on each rendering: what its store needs
#      (embedded: one replica, Recreate, /data on a claim; scale-out: several
#      replicas, a rolling update that never lowers the serving count, no
#      claim, BERTH_STORE and BERTH_BROKER from their Secrets, a
#      PodDisruptionBudget, a writable cache; dev: that too, and each URL in
#      its development-only Secrets reaching a dev service that serves it,
#      on the Service's port, with the URL's user and password) and what all
#      need (probes, security context, a grace period above preStop + drain,
#      a valid manifest).
# Then, without ROOT, it checks that it rejects broken copies, each for the
# reason it was broken. The tools go into a virtualenv in a cache folder,
# pinned. BERTH_KUSTOMIZE=python renders with the fallback even where
# kubectl is installed.
#
# Usage: tests/k8s/validate.sh [ROOT]
set -euo pipefail
cd "$(dirname "$0")/../.."

KUBERNETES_VALIDATE_VERSION=1.37.0
YAMLLINT_VERSION=1.38.0
VARIANTS=(embedded scale-out dev)
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

# render DIR OUT: writes what `kubectl apply -k DIR` would apply to OUT.
render() {
    if command -v kubectl >/dev/null && [ "${BERTH_KUSTOMIZE:-}" != python ]; then
        kubectl kustomize "$1" >"$2" || return 1
        "$venv/bin/python" tests/k8s/kustomize.py "$1" --same-as "$2"
    else
        "$venv/bin/python" tests/k8s/kustomize.py "$1" >"$2"
    fi
}

# validate ROOT: prints what it checks; returns non-zero on any failure.
validate() {
    local root="$1" failed=0 renderer out
    local files
    mapfile -t files < <(find "$root" -name '*.yaml' | sort)
    [ "${#files[@]}" -gt 0 ] || { echo "FAIL: no .yaml files in $root"; return 1; }

    echo "--- yamllint --strict, ${#files[@]} files"
    "$venv/bin/yamllint" --strict --config-file .yamllint "${files[@]}" || failed=1

    echo "--- layout"
    "$venv/bin/python" tests/k8s/invariants.py layout "$root" || failed=1

    renderer="tests/k8s/kustomize.py"
    if command -v kubectl >/dev/null && [ "${BERTH_KUSTOMIZE:-}" != python ]; then
        renderer="kubectl kustomize (and tests/k8s/kustomize.py agrees)"
    fi
    out="$(mktemp -d)"
    for variant in "${VARIANTS[@]}"; do
        echo "--- $variant: rendered by $renderer"
        if ! render "$root/$variant" "$out/$variant.yaml"; then
            failed=1
            continue
        fi
        echo "--- $variant: kubernetes-validate --strict, Kubernetes $k8s_version"
        "$venv/bin/kubernetes-validate" --strict --kubernetes-version "$k8s_version" \
            "$out/$variant.yaml" || failed=1
        echo "--- $variant: invariants"
        "$venv/bin/python" tests/k8s/invariants.py "$variant" "$out/$variant.yaml" || failed=1
    done
    rm -rf "$out"
    return "$failed"
}

# break_copy NAME ROOT: breaks the copy ROOT one way; prints the file changed
# and, after a tab, what the validator must say about it.
break_copy() {
    local file expect
    case "$1" in
        unknown-field)
            file=base/deployment.yaml expect="'enableServiceLink' was unexpected"
            sed -i 's/enableServiceLinks:/enableServiceLink:/' "$2/$file" ;;
        wrong-type)
            file=base/deployment.yaml expect="'eighty' is not of type 'integer'"
            sed -i 's/containerPort: 8080/containerPort: "eighty"/' "$2/$file" ;;
        short-grace)
            file=base/deployment.yaml expect="terminationGracePeriodSeconds 25 must exceed"
            sed -i 's/terminationGracePeriodSeconds: 35/terminationGracePeriodSeconds: 25/' \
                "$2/$file" ;;
        embedded-two-replicas)
            file=embedded/deployment-patch.yaml expect="replicas must be 1"
            sed -i 's/^  replicas: 1$/  replicas: 2/' "$2/$file" ;;
        scale-out-with-a-claim)
            file=scale-out/deployment-patch.yaml expect="no PersistentVolumeClaim"
            sed -i '/^          emptyDir:$/,/sizeLimit/c\          persistentVolumeClaim:\n            claimName: berth-cache' \
                "$2/$file" ;;
        scale-out-literal-store)
            file=scale-out/deployment-patch.yaml
            expect="BERTH_STORE must come from a secretKeyRef"
            sed -i '/^              valueFrom:$/,/key: url$/c\              value: postgres://berth:hunter2@db.example:5432/berth' \
                "$2/$file" ;;
        scale-out-losing-a-replica)
            file=scale-out/deployment-patch.yaml expect="maxUnavailable must be 0"
            sed -i 's/maxUnavailable: 0/maxUnavailable: 1/' "$2/$file" ;;
        scale-out-no-pdb)
            file=scale-out/kustomization.yaml expect="no PodDisruptionBudget"
            sed -i '/^  - pdb.yaml$/d' "$2/$file" ;;
        scale-out-no-broker)
            file=scale-out/deployment-patch.yaml
            expect="BERTH_BROKER must come from a secretKeyRef to the Secret berth-broker"
            sed -i '/^            - name: BERTH_BROKER$/,/key: url$/d' "$2/$file" ;;
        dev-unmarked-secret)
            file=dev/secret-broker.yaml expect="Secret berth-broker is in the manifests"
            sed -i '/berth\/development-only/d' "$2/$file" ;;
        dev-wrong-port)
            file=dev/rabbitmq-service.yaml expect="Service berth-rabbitmq has no port 5672"
            sed -i 's/port: 5672/port: 5673/' "$2/$file" ;;
        dev-wrong-password)
            file=dev/secret-store.yaml
            expect="the password in the URL is not the one StatefulSet berth-postgres is started with"
            sed -i 's/^  password: .*/  password: another-password/' "$2/$file" ;;
        dev-no-volume)
            file=dev/rabbitmq-statefulset.yaml expect="needs a volumeClaimTemplate, mounted"
            sed -i '/^  volumeClaimTemplates:$/,$d' "$2/$file" ;;
        *) return 1 ;;
    esac
    printf '%s\t%s\n' "$file" "$expect"
}

setup_venv
k8s_version="$("$venv/bin/python" -c \
    'import kubernetes_validate.utils as u; print(u.latest_version())')"
target="${1:-deploy/k8s}"
echo "=== validating $target"
if ! validate "$target"; then
    echo "FAIL: $target has invalid manifests"
    exit 1
fi
echo "PASS: $target"

if [ $# -eq 0 ]; then
    # The validator must reject what is wrong, and for the right reason.
    scratch="$(mktemp -d)"
    trap 'rm -rf "$scratch"' EXIT
    for breakage in unknown-field wrong-type short-grace embedded-two-replicas \
        scale-out-with-a-claim scale-out-literal-store scale-out-losing-a-replica \
        scale-out-no-pdb scale-out-no-broker dev-unmarked-secret dev-wrong-port \
        dev-wrong-password dev-no-volume; do
        rm -rf "$scratch/k8s" && cp -r "$target" "$scratch/k8s"
        IFS=$'\t' read -r file expect < <(break_copy "$breakage" "$scratch/k8s")
        if [ -z "$file" ] || cmp -s "$target/$file" "$scratch/k8s/$file"; then
            echo "FAIL: self-check $breakage did not change $file"
            exit 1
        fi
        if validate "$scratch/k8s" >"$scratch/out" 2>&1; then
            cat "$scratch/out"
            echo "FAIL: a copy with $breakage passed validation"
            exit 1
        fi
        if ! grep -qF -- "$expect" "$scratch/out"; then
            cat "$scratch/out"
            echo "FAIL: a copy with $breakage was rejected, but not for saying: $expect"
            exit 1
        fi
        echo "ok: a copy with $breakage is rejected: $(grep -m1 -F -- "$expect" "$scratch/out" |
            sed 's/^ERROR .* against version [0-9.]*: //' | cut -c1-150)"
    done
fi
echo "PASS: Kubernetes manifests"
