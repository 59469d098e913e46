"""What deploy/k8s must keep, beyond what the Kubernetes schemas check: run by
tests/k8s/validate.sh on each variant's rendered output.

Usage: invariants.py layout ROOT                   every kustomization under
                                                   ROOT lists exactly its
                                                   own files
       invariants.py embedded|scale-out|dev FILE   the rendered variant keeps
                                                   what its store needs
"""

import base64
import pathlib
import re
import sys
import tomllib
import urllib.parse

import yaml

BASE = "base"
VARIANTS = ("embedded", "scale-out", "dev")

# The label that lets a committed Secret into the dev variant, and nowhere
# else.
DEV_ONLY = "berth/development-only"

# The Secrets the scale-out Deployment reads, by variable: deploy/k8s/dev
# and the README's instructions create exactly these.
SECRET_ENV = {"BERTH_STORE": ("berth-store", "url"), "BERTH_BROKER": ("berth-broker", "url")}

# For each URL scheme a dev service serves: the variables its official image
# is made with the URL's user, password and database (or vhost) from.
DEV_SERVER_ENV = {
    "postgres": ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"),
    "amqp": ("RABBITMQ_DEFAULT_USER", "RABBITMQ_DEFAULT_PASS", "RABBITMQ_DEFAULT_VHOST"),
}


def main():
    what, path = sys.argv[1], pathlib.Path(sys.argv[2])
    if what == "layout":
        errors = check_layout(path)
        summary = f"{', '.join((BASE,) + VARIANTS)}: each lists exactly its files"
    else:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        deps = of_kind(docs, "Deployment")
        if len(deps) != 1 or len(deps[0]["spec"]["template"]["spec"]["containers"]) != 1:
            sys.exit(f"FAIL: {what}: expected one Deployment with one container")
        errors, summary = check_common(docs, dev=what == "dev")
        more, detail = {"embedded": check_embedded, "scale-out": check_scale_out,
                        "dev": check_dev}[what](docs)
        errors += more
        summary = f"{detail}; {summary}"
    for e in errors:
        print(f"FAIL: {what}: {e}")
    if errors:
        sys.exit(1)
    print(f"ok: {what}: {summary}")


def check_layout(root):
    errors = []
    found = sorted(k.parent.relative_to(root).as_posix() for k in root.rglob("kustomization.yaml"))
    if found != sorted((BASE,) + VARIANTS):
        errors.append(f"kustomizations under {root} are {found}, but validate.sh checks "
                      f"{[BASE, *VARIANTS]}: give a new variant its invariants here")
    for name in found:
        d = root / name
        k = yaml.safe_load((d / "kustomization.yaml").read_text())
        listed = list(k.get("resources") or []) + [p["path"] for p in k.get("patches") or []
                                                   if "path" in p]
        for entry in listed:
            if not (d / entry).exists():
                errors.append(f"{name}/kustomization.yaml lists {entry}, which is not there")
        files = {f.name for f in d.glob("*.yaml")} - {"kustomization.yaml"}
        for f in sorted(files - set(listed)):
            errors.append(f"{name}/{f} is not listed in {name}/kustomization.yaml")
        if name in VARIANTS and not {f"../{v}" for v in (BASE,) + VARIANTS} & set(listed):
            errors.append(f"{name}/kustomization.yaml does not build on ../{BASE} "
                          "or on another variant")
    return errors


def pod_parts(docs, workload=None):
    """The one Deployment (or the given workload), its pod spec, its one
    container, its args and mounts."""
    (dep,) = of_kind(docs, "Deployment") if workload is None else (workload,)
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
    vols = {v["name"]: v for v in pod.get("volumes", [])}
    return dep, pod, c, c.get("args", []), mounts, vols


def of_kind(docs, kind):
    return [d for d in docs if d.get("kind") == kind]


def arg(args, name):
    """The value of --name=VALUE or --name VALUE, or None."""
    for i, a in enumerate(args):
        m = re.fullmatch(rf"--{name}(?:=(.*))?", a)
        if m:
            return m.group(1) if m.group(1) is not None else args[i + 1]
    return None


def selects(selector, labels):
    match = (selector or {}).get("matchLabels") or {}
    return bool(match) and all(labels.get(k) == v for k, v in match.items())


def check_common(docs, dev=False):
    errors = []
    dep, pod, c, args, mounts, vols = pod_parts(docs)
    labels = dep["spec"]["template"]["metadata"].get("labels", {})

    for d in docs:
        if (d["metadata"].get("labels") or {}).get("app.kubernetes.io/part-of") != "berth":
            errors.append(f"{d['kind']} {d['metadata']['name']}: no label "
                          "app.kubernetes.io/part-of: berth")
    for secret in of_kind(docs, "Secret"):
        if not (dev and (secret["metadata"].get("labels") or {}).get(DEV_ONLY) == "true"):
            errors.append(f"Secret {secret['metadata']['name']} is in the manifests: credentials "
                          "are created in the cluster, never committed (only the dev variant "
                          f"holds Secrets, each labelled {DEV_ONLY}: \"true\")")
    for text in args + [e.get("value") or "" for e in c.get("env", [])]:
        if re.search(r"://[^/@\s]*:[^/@\s]*@", text):
            errors.append(f"a password in plain text: {text}")

    drain = int(arg(args, "drain-timeout-secs") or 20)  # berth's default
    pre_stop = ((c.get("lifecycle") or {}).get("preStop") or {}).get("sleep", {}).get("seconds", 0)
    grace = pod.get("terminationGracePeriodSeconds", 30)
    if grace <= drain + pre_stop:
        errors.append(f"terminationGracePeriodSeconds {grace} must exceed preStop {pre_stop} s "
                      f"+ drain {drain} s, or in-flight requests are killed")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        got = ((c.get(probe) or {}).get("httpGet") or {}).get("path")
        if got != path:
            errors.append(f"{probe} must GET {path}, not {got}")

    sc, psc = c.get("securityContext") or {}, pod.get("securityContext") or {}
    for key, value in {"readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False}.items():
        if sc.get(key) is not value:
            errors.append(f"securityContext.{key} must be {value}")
    if not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
        errors.append("runAsNonRoot must be true")
    if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
        errors.append("capabilities must drop ALL")
    seccomp = sc.get("seccompProfile") or psc.get("seccompProfile") or {}
    if seccomp.get("type") != "RuntimeDefault":
        errors.append("seccompProfile must be RuntimeDefault")
    resources = c.get("resources") or {}
    if not resources.get("limits") or not resources.get("requests"):
        errors.append("resources need requests and limits")

    mounted = {m["name"] for m in mounts.values()}
    for name in vols.keys() - mounted:
        errors.append(f"volume {name} is not mounted")
    for name in mounted - vols.keys():
        errors.append(f"a mount names volume {name}, which the pod does not have")

    manifest = arg(args, "manifest")
    components = check_manifest(docs, manifest, mounts, vols, errors)

    services = of_kind(docs, "Service")
    pods = [w["spec"]["template"]["metadata"].get("labels", {})
            for w in of_kind(docs, "Deployment") + of_kind(docs, "StatefulSet")]
    berth = [svc for svc in services
             if selects({"matchLabels": svc["spec"].get("selector")}, labels)]
    if not berth:
        errors.append("no Service selects berth's pods")
    for svc in services:
        if not any(selects({"matchLabels": svc["spec"].get("selector")}, p) for p in pods):
            errors.append(f"Service {svc['metadata']['name']}: selector "
                          f"{svc['spec'].get('selector')} matches no pod")
    for svc in berth:
        if 80 not in [p.get("port") for p in svc["spec"].get("ports", [])]:
            errors.append(f"Service {svc['metadata']['name']} does not listen on port 80")
    return errors, (f"probes, security context, grace {grace} s > {pre_stop} + {drain} s, "
                    f"manifest with {components} components")


def check_manifest(docs, manifest, mounts, vols, errors):
    """The --manifest file is a key of a mounted ConfigMap, and a berth manifest."""
    if manifest is None:
        errors.append("berth is not given --manifest=FILE")
        return 0
    folder, key = manifest.rsplit("/", 1)
    vol = vols.get((mounts.get(folder) or {}).get("name"), {})
    if "configMap" not in vol:
        errors.append(f"--manifest={manifest}: {folder} is not a mounted ConfigMap")
        return 0
    cms = [d for d in of_kind(docs, "ConfigMap")
           if d["metadata"]["name"] == vol["configMap"]["name"]]
    if not cms or key not in (cms[0].get("data") or {}):
        errors.append(f"ConfigMap {vol['configMap']['name']} with key {key} "
                      "is not in the manifests")
        return 0
    try:
        components = tomllib.loads(cms[0]["data"][key])["components"]
        if not components:
            errors.append("the manifest has no components")
        for name, comp in components.items():
            if not comp.get("wasm") or not comp.get("routes"):
                errors.append(f"manifest: component {name} needs wasm and routes")
        return len(components)
    except (tomllib.TOMLDecodeError, KeyError, AttributeError) as e:
        errors.append(f"ConfigMap {vol['configMap']['name']}: {key} is not a berth manifest: {e}")
        return 0


def check_embedded(docs):
    """SQLite on a ReadWriteOnce volume: one pod, never two at once."""
    errors = []
    dep, pod, c, args, mounts, vols = pod_parts(docs)
    spec = dep["spec"]
    if spec.get("replicas") != 1:
        errors.append(f"replicas must be 1 (single-writer store), not {spec.get('replicas')}")
    if (spec.get("strategy") or {}).get("type") != "Recreate":
        errors.append("strategy must be Recreate, so two pods never share the store")
    data = arg(args, "data")
    vol = vols.get((mounts.get(data) or {}).get("name"), {})
    claim = (vol.get("persistentVolumeClaim") or {}).get("claimName")
    if data is None:
        errors.append("berth is not given --data=DIR")
    elif claim is None:
        errors.append(f"--data={data} must be a mounted PersistentVolumeClaim")
    elif not [d for d in of_kind(docs, "PersistentVolumeClaim") if d["metadata"]["name"] == claim]:
        errors.append(f"PersistentVolumeClaim {claim} is not in the manifests")
    if arg(args, "store") or "BERTH_STORE" in [e["name"] for e in c.get("env", [])]:
        errors.append("the embedded variant keeps its store in --data, not --store/BERTH_STORE")
    return errors, f"replicas 1, Recreate, --data={data} on claim {claim}"


def check_scale_out(docs):
    """PostgreSQL shared by several pods, none with a volume of its own."""
    errors = []
    dep, pod, c, args, mounts, vols = pod_parts(docs)
    spec = dep["spec"]
    labels = dep["spec"]["template"]["metadata"].get("labels", {})
    replicas = spec.get("replicas", 1)
    if replicas < 2:
        errors.append(f"replicas must be at least 2, not {replicas}")
    strategy = spec.get("strategy") or {}
    rolling = strategy.get("rollingUpdate") or {}
    if strategy.get("type") != "RollingUpdate":
        errors.append("strategy must be RollingUpdate")
    if rolling.get("maxUnavailable") not in (0, "0%"):
        errors.append(f"rollingUpdate.maxUnavailable must be 0, so an update never lowers "
                      f"the serving count, not {rolling.get('maxUnavailable', '25% (default)')}")

    if of_kind(docs, "PersistentVolumeClaim") or any(
            "persistentVolumeClaim" in v for v in vols.values()):
        errors.append("no PersistentVolumeClaim: the replicas share PostgreSQL, not a volume")
    if arg(args, "data") is not None:
        errors.append("no --data: the store is BERTH_STORE")
    if arg(args, "store") is not None:
        errors.append("no --store argument: the URL holds a password; BERTH_STORE from a "
                      "secretKeyRef instead")
    for var, (name, key) in SECRET_ENV.items():
        found = [e for e in c.get("env", []) if e["name"] == var]
        ref = ((found[0].get("valueFrom") or {}).get("secretKeyRef") or {}) if found else {}
        if len(found) != 1 or "value" in found[0] or (ref.get("name"), ref.get("key")) != (
                name, key):
            errors.append(f"{var} must come from a secretKeyRef to the Secret {name}, key "
                          f"{key}, never a literal value")

    cache = arg(args, "cache-dir")
    mount = mounts.get(cache) or {}
    if cache is None:
        errors.append("berth is not given --cache-dir=DIR (the root filesystem is read-only)")
    elif "emptyDir" not in vols.get(mount.get("name"), {}) or mount.get("readOnly"):
        errors.append(f"--cache-dir={cache} must be a writable emptyDir mount")

    pdbs = [p for p in of_kind(docs, "PodDisruptionBudget")
            if selects(p["spec"].get("selector"), labels)]
    if not pdbs:
        errors.append("no PodDisruptionBudget selects the pods")
    for p in pdbs:
        s = p["spec"]
        allowed = (s["maxUnavailable"] if "maxUnavailable" in s
                   else replicas - s.get("minAvailable", replicas))
        if not isinstance(allowed, int) or not 1 <= allowed < replicas:
            errors.append(f"PodDisruptionBudget {p['metadata']['name']} must let one pod, and "
                          f"fewer than all {replicas}, be evicted at a time (use integers)")

    anti = (((pod.get("affinity") or {}).get("podAntiAffinity") or {})
            .get("preferredDuringSchedulingIgnoredDuringExecution") or [])
    spread = pod.get("topologySpreadConstraints") or []
    if not any(t["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
               and selects(t["podAffinityTerm"].get("labelSelector"), labels) for t in anti) \
            and not any(t["topologyKey"] == "kubernetes.io/hostname"
                        and selects(t.get("labelSelector"), labels) for t in spread):
        errors.append("the pods must be spread across nodes (podAntiAffinity or "
                      "topologySpreadConstraints on kubernetes.io/hostname, selecting them)")
    secrets = ", ".join(f"{var} from Secret {name}/{key}" for var, (name, key) in
                        SECRET_ENV.items())
    return errors, (f"replicas {replicas}, RollingUpdate maxUnavailable 0, no volume claim, "
                    f"{secrets}, --cache-dir={cache} on an emptyDir, "
                    f"PodDisruptionBudget, spread across nodes")


def check_dev(docs):
    """scale-out, with each URL it reads leading to a dev service in the
    manifests that serves it: the URL's host is a Service, its port one of
    that Service's, reaching a StatefulSet's container started with the URL's
    user, password and database; and each such service kept as the rest is
    (its own volume, probes, limits, non-root)."""
    errors, _ = check_scale_out(docs)
    served = []
    for var, (name, key) in SECRET_ENV.items():
        url = secret_value(docs, name, key)
        if url is None:
            errors.append(f"{var}: the Secret {name} with key {key} is not in the manifests")
            continue
        u = urllib.parse.urlsplit(url)
        where = f"{var} ({u.scheme}://{u.hostname}:{u.port}{u.path})"
        if u.scheme not in DEV_SERVER_ENV:
            errors.append(f"{where}: no dev service serves {u.scheme}://")
            continue
        svc = [s for s in of_kind(docs, "Service") if s["metadata"]["name"] == u.hostname]
        if not svc:
            errors.append(f"{where}: there is no Service {u.hostname}")
            continue
        port = [p for p in svc[0]["spec"].get("ports", []) if p.get("port") == u.port]
        if not port:
            errors.append(f"{where}: Service {u.hostname} has no port {u.port}")
            continue
        sets = [w for w in of_kind(docs, "StatefulSet")
                if selects({"matchLabels": svc[0]["spec"].get("selector")},
                           w["spec"]["template"]["metadata"].get("labels", {}))]
        if len(sets) != 1:
            errors.append(f"{where}: Service {u.hostname} must select one StatefulSet's pods")
            continue
        sts = sets[0]
        _, pod, c, _, mounts, _ = pod_parts(docs, sts)
        target = port[0].get("targetPort", u.port)
        if not [p for p in c.get("ports", [])
                if target in (p.get("name"), p.get("containerPort"))]:
            errors.append(f"{where}: Service {u.hostname} sends port {u.port} to {target}, "
                          f"which StatefulSet {sts['metadata']['name']} does not expose")
        env = {e["name"]: e for e in c.get("env", [])}
        for var_name, want, what in zip(DEV_SERVER_ENV[u.scheme],
                                        (u.username, u.password, u.path.lstrip("/")),
                                        ("user", "password", "database")):
            e = env.get(var_name) or {}
            ref = (e.get("valueFrom") or {}).get("secretKeyRef") or {}
            if what == "password" and "value" in e:
                errors.append(f"{where}: {var_name} must come from a secretKeyRef, never a "
                              "literal value")
            got = secret_value(docs, ref.get("name"), ref.get("key")) if ref else e.get("value")
            if got != want:
                errors.append(f"{where}: the {what} in the URL is not the one StatefulSet "
                              f"{sts['metadata']['name']} is started with ({var_name})")
        errors += [f"StatefulSet {sts['metadata']['name']}: {e}"
                   for e in check_dev_service(sts, pod, c, mounts)]
        served.append(f"{var} by {sts['metadata']['name']} via {u.hostname}:{u.port}")
    return errors, "scale-out, " + ", ".join(served)


def check_dev_service(sts, pod, c, mounts):
    """What each dev database or broker keeps: its data on a volume of its
    own, probes, limits and a non-root, locked-down container."""
    errors = []
    claims = {t["metadata"]["name"] for t in sts["spec"].get("volumeClaimTemplates", [])}
    if not claims or not claims <= {m["name"] for m in mounts.values()}:
        errors.append("needs a volumeClaimTemplate, mounted, for its data")
    if sts["spec"].get("replicas", 1) != 1:
        errors.append("replicas must be 1: it is a single dev server, not a cluster")
    for probe in ("readinessProbe", "livenessProbe"):
        if not c.get(probe):
            errors.append(f"needs a {probe}")
    resources = c.get("resources") or {}
    if not resources.get("limits") or not resources.get("requests"):
        errors.append("resources need requests and limits")
    sc, psc = c.get("securityContext") or {}, pod.get("securityContext") or {}
    if not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
        errors.append("runAsNonRoot must be true")
    if sc.get("allowPrivilegeEscalation") is not False:
        errors.append("securityContext.allowPrivilegeEscalation must be false")
    if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
        errors.append("capabilities must drop ALL")
    return errors


def secret_value(docs, name, key):
    """The value of key in the Secret name in the manifests, or None."""
    for secret in of_kind(docs, "Secret"):
        if secret["metadata"]["name"] == name:
            if key in (secret.get("stringData") or {}):
                return secret["stringData"][key]
            if key in (secret.get("data") or {}):
                return base64.b64decode(secret["data"][key]).decode()
    return None


if __name__ == "__main__":
    main()
