#!/usr/bin/env bash
# Validates deploy/kubeedge/*.yaml against the Kubernetes OpenAPI schemas, offline: the PyPI
# package kubernetes-validate bundles the schemas of every release. Strict: unknown fields fail.
# The venv is made once under .cache (needs the package index only the first time).
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$root"
validate=$(pypi_tool k8s-venv kubernetes-validate==1.37.0 kubernetes-validate)
# The oldest release KubeEdge 1.20 supports; newer ones accept these manifests too.
"$validate" --strict --quiet -k "${K8S_VERSION:-1.30.0}" deploy/kubeedge/*.yaml
