"""Renders a kustomization the way `kubectl kustomize` does, for exactly the
features deploy/k8s uses, so that tests/k8s/validate.sh also works where no
kubectl is installed.

Supported: `resources` (files, and folders holding a kustomization),
`patches` (strategic-merge patches matched by kind and name, and JSON 6902
patches with a kind/name target, from `path` or inline `patch`),
`labels` (pairs, without selectors or templates), `images` (newName,
newTag, digest) and `namespace`. Anything else is refused, not guessed:
use kubectl, or extend this file and let validate.sh compare the two
(it does whenever kubectl is there).

Usage: kustomize.py DIR                 prints the rendered resources as YAML
       kustomize.py DIR --same-as FILE  fails unless FILE (kubectl's rendering)
                                        holds the same resources
"""

import copy
import pathlib
import sys

import yaml

KNOWN_KEYS = {"apiVersion", "kind", "resources", "patches", "labels", "images", "namespace"}

# The merge key of each list a strategic-merge patch may reach here, as in
# the Kubernetes API (patchMergeKey). Other lists of objects are refused:
# replacing them whole, as lists of strings are, would be a silent guess.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "volumes": "name",
    "env": "name",
    "volumeMounts": "mountPath",
}


class Unsupported(Exception):
    pass


def render(directory):
    d = pathlib.Path(directory)
    k = yaml.safe_load((d / "kustomization.yaml").read_text())
    unknown = set(k) - KNOWN_KEYS
    if unknown:
        raise Unsupported(f"{d}/kustomization.yaml: {sorted(unknown)} not supported here")
    resources = []
    for entry in k.get("resources") or []:
        path = d / entry
        if path.is_dir():
            resources += render(path)
        else:
            resources += [r for r in yaml.safe_load_all(path.read_text()) if r is not None]
    for p in k.get("patches") or []:
        apply_patch(d, p, resources)
    if "namespace" in k:
        for r in resources:
            r["metadata"]["namespace"] = k["namespace"]
    for entry in k.get("labels") or []:
        if entry.get("includeSelectors") or entry.get("includeTemplates"):
            raise Unsupported("labels with includeSelectors or includeTemplates")
        for r in resources:
            r["metadata"].setdefault("labels", {}).update(entry["pairs"])
    for image in k.get("images") or []:
        for r in resources:
            set_image(r, image)
    return resources


def apply_patch(d, p, resources):
    body = yaml.safe_load((d / p["path"]).read_text() if "path" in p else p["patch"])
    target = p.get("target") or {}
    if set(target) - {"kind", "name"}:
        raise Unsupported(f"patch target {target}: only kind and name are supported")
    if isinstance(body, dict) and not target:
        target = {"kind": body["kind"], "name": body["metadata"]["name"]}
    matched = [r for r in resources
               if all((r["kind"] if key == "kind" else r["metadata"]["name"]) == value
                      for key, value in target.items())]
    if not matched:
        raise Unsupported(f"patch {p.get('path', p)} matches no resource")
    for r in matched:
        if isinstance(body, list):
            for op in body:
                json6902(r, op)
        else:
            merged = merge(r, body)
            r.clear()
            r.update(merged)


def merge(dest, patch, field=None):
    """A strategic merge of patch into dest (both parsed YAML)."""
    if isinstance(patch, dict) and isinstance(dest, dict):
        if any(key.startswith("$") for key in patch):
            raise Unsupported(f"patch directive in {field}")
        out = dict(dest)
        for key, value in patch.items():
            if value is None:
                out.pop(key, None)
            elif key in out:
                out[key] = merge(out[key], value, key)
            else:
                out[key] = copy.deepcopy(value)
        return out
    objects = isinstance(patch, list) and any(isinstance(x, dict) for x in patch)
    if objects and isinstance(dest, list):
        key = MERGE_KEYS.get(field)
        if key is None:
            raise Unsupported(f"how kustomize merges the list `{field}` is not known here")
        # kustomize puts the patch's elements first, in its order, then the
        # ones only the base has.
        by_key = {x[key]: x for x in dest}
        out = [merge(by_key[x[key]], x, None) if x[key] in by_key else copy.deepcopy(x)
               for x in patch]
        patched = {x[key] for x in patch}
        return out + [x for x in dest if x[key] not in patched]
    return copy.deepcopy(patch)


def json6902(resource, op):
    if op["op"] not in ("add", "replace", "remove"):
        raise Unsupported(f"JSON patch op {op['op']}")
    *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
    node = resource
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    if isinstance(node, list):
        if op["op"] == "add":
            node.insert(len(node) if last == "-" else int(last), copy.deepcopy(op["value"]))
        elif op["op"] == "replace":
            node[int(last)] = copy.deepcopy(op["value"])
        else:
            del node[int(last)]
    elif op["op"] == "remove":
        del node[last]
    else:
        if op["op"] == "replace" and last not in node:
            raise Unsupported(f"JSON patch replaces {op['path']}, which is not there")
        node[last] = copy.deepcopy(op["value"])


def set_image(resource, image):
    pod = (((resource.get("spec") or {}).get("template") or {}).get("spec")) or {}
    for c in pod.get("containers", []) + pod.get("initContainers", []):
        name = c["image"].split("@")[0]
        if ":" in name.rsplit("/", 1)[-1]:
            name = name.rsplit(":", 1)[0]
        if name != image["name"]:
            continue
        new = image.get("newName", name)
        if "digest" in image:
            c["image"] = f"{new}@{image['digest']}"
        elif "newTag" in image:
            c["image"] = f"{new}:{image['newTag']}"
        else:
            c["image"] = new + c["image"][len(name):]


def differences(ours, theirs, path=""):
    """Where two parsed documents differ, as a list of paths."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        return [d for key in sorted(set(ours) | set(theirs), key=str)
                for d in differences(ours.get(key), theirs.get(key), f"{path}.{key}")]
    if isinstance(ours, list) and isinstance(theirs, list) and len(ours) == len(theirs):
        return [d for i, (a, b) in enumerate(zip(ours, theirs))
                for d in differences(a, b, f"{path}[{i}]")]
    return [] if ours == theirs else [f"{path}: {ours!r} here, {theirs!r} from kubectl"]


def literal_if_multiline(dumper, s):
    """Keeps the manifest in the ConfigMap readable, as `|` blocks."""
    return dumper.represent_scalar("tag:yaml.org,2002:str", s, style="|" if "\n" in s else None)


def by_name(docs):
    return {(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]): d for d in docs}


if __name__ == "__main__":
    try:
        docs = render(sys.argv[1])
    except (Unsupported, KeyError, IndexError, ValueError, OSError) as e:
        sys.exit(f"kustomize.py: cannot render {sys.argv[1]}: {e}")
    if sys.argv[2:3] == ["--same-as"]:
        theirs = [d for d in yaml.safe_load_all(pathlib.Path(sys.argv[3]).read_text()) if d]
        diff = differences(by_name(docs), by_name(theirs))
        for line in diff:
            line = f"tests/k8s/kustomize.py renders {sys.argv[1]} unlike kubectl: {line}"
            print(f"FAIL: {line[:400]}")
        sys.exit(1 if diff else 0)
    yaml.SafeDumper.add_representer(str, literal_if_multiline)
    yaml.safe_dump_all(docs, sys.stdout, sort_keys=True)
