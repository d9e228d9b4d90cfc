"""Validates the Sedna custom resources in deploy/kubeedge/sedna/*.yaml, offline.

Each resource is checked against the openAPIV3Schema of its CustomResourceDefinition in
deploy/kubeedge/sedna/crds/ (strict: a field the schema does not name fails, as the API server's
strict field validation does), and each pod template in it is checked as a Kubernetes PodTemplate
with kubernetes-validate --strict (Kubernetes' own schema). Runs in the venv of
tools/check/validate-k8s.sh (jsonschema and PyYAML come with kubernetes-validate).
Usage: validate_sedna.py KUBERNETES_VERSION KUBERNETES_VALIDATE_BIN
"""
import copy
import glob
import os
import subprocess
import sys
import tempfile

import jsonschema
import yaml

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
SEDNA = os.path.join(ROOT, "deploy", "kubeedge", "sedna")


def strict(schema):
    """OpenAPI v3 (Kubernetes' structural schemas) as JSON Schema, closed objects."""
    schema = copy.deepcopy(schema)

    def walk(s):
        if not isinstance(s, dict):
            return
        if s.pop("x-kubernetes-int-or-string", False):
            s.pop("type", None)
            s["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        if s.pop("nullable", False) and "type" in s:
            s["type"] = [s["type"], "null"]
        preserve = s.pop("x-kubernetes-preserve-unknown-fields", False)
        for key in list(s):
            if key.startswith("x-kubernetes-"):
                del s[key]
        if "properties" in s and "additionalProperties" not in s and not preserve:
            s["additionalProperties"] = False
        for p in s.get("properties", {}).values():
            walk(p)
        walk(s.get("items"))
        if isinstance(s.get("additionalProperties"), dict):
            walk(s["additionalProperties"])
        for k in ("anyOf", "allOf", "oneOf"):
            for sub in s.get(k, []):
                walk(sub)

    walk(schema)
    # metadata is `type: object` in a CRD; the API server checks it as ObjectMeta.
    return schema


def crds():
    out = {}
    for path in glob.glob(os.path.join(SEDNA, "crds", "*.yaml")):
        with open(path, encoding="utf-8") as f:
            crd = yaml.safe_load(f)
        group = crd["spec"]["group"]
        kind = crd["spec"]["names"]["kind"]
        for v in crd["spec"]["versions"]:
            out[(f"{group}/{v['name']}", kind)] = strict(v["schema"]["openAPIV3Schema"])
    return out


def main(k8s_version, validate_bin):
    schemas = crds()
    failures = 0
    templates = []
    for path in sorted(glob.glob(os.path.join(SEDNA, "*.yaml"))):
        with open(path, encoding="utf-8") as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        for doc in docs:
            key = (doc.get("apiVersion"), doc.get("kind"))
            where = f"{os.path.relpath(path, ROOT)}: {key[1]} {doc.get('metadata', {}).get('name')}"
            schema = schemas.get(key)
            if schema is None:
                print(f"{where}: no CRD in crds/ for {key}", file=sys.stderr)
                failures += 1
                continue
            errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(doc), key=str)
            for e in errors:
                print(f"{where}: {'.'.join(map(str, e.absolute_path))}: {e.message}", file=sys.stderr)
            failures += len(errors)
            meta = doc.get("metadata", {})
            if not meta.get("name") or set(meta) - {"name", "namespace", "labels", "annotations"}:
                print(f"{where}: metadata needs a name (and only name, namespace, labels, annotations)", file=sys.stderr)
                failures += 1
            for worker in ("edgeWorker", "cloudWorker"):
                template = doc.get("spec", {}).get(worker, {}).get("template")
                if template is not None:
                    templates.append((f"{where} {worker}.template", template))
    with tempfile.TemporaryDirectory() as tmp:
        for i, (where, template) in enumerate(templates):
            pod_template = {
                "apiVersion": "v1",
                "kind": "PodTemplate",
                "metadata": {"name": f"template-{i}"},
                "template": template,
            }
            file = os.path.join(tmp, f"template-{i}.yaml")
            with open(file, "w", encoding="utf-8") as f:
                yaml.safe_dump(pod_template, f)
            run = subprocess.run(
                [validate_bin, "--strict", "--quiet", "-k", k8s_version, file],
                capture_output=True, text=True,
            )
            if run.returncode != 0:
                print(f"{where}:\n{run.stdout}{run.stderr}", file=sys.stderr)
                failures += 1
    if failures:
        print(f"deploy/kubeedge/sedna: {failures} problem(s)", file=sys.stderr)
        sys.exit(1)
    print(f"deploy/kubeedge/sedna: valid ({len(templates)} pod templates)", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
