#!/usr/bin/env bash
# Validates deploy/kubeedge/*.yaml against the Kubernetes OpenAPI schemas, offline: the PyPI
# package kubernetes-validate bundles the schemas of every release. Strict: unknown fields fail.
# The venv is made once under .cache (needs the package index only the first time).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/../env.sh"
cd "$root"
validate=$(pypi_tool k8s-venv kubernetes-validate==1.37.0 kubernetes-validate)
# The oldest release KubeEdge 1.20 supports; newer ones accept these manifests too.
"$validate" --strict --quiet -k "${K8S_VERSION:-1.30.0}" deploy/kubeedge/*.yaml
# Sedna's custom resources (joint inference) against the CRDs committed in deploy/kubeedge/sedna/crds,
# their pod templates against Kubernetes' schemas.
"$(dirname "$validate")/python" tools/check/validate_sedna.py "${K8S_VERSION:-1.30.0}" "$validate"
# Every image the manifests run is the one tools/build/image.sh builds (name and version).
image=$(tools/build/image.sh --name)
bad=$(grep -Hn '^ *image:' deploy/kubeedge/*.yaml deploy/kubeedge/sedna/*.yaml | grep -v "image: $image\$" || true)
if [ -n "$bad" ]; then
  echo "deploy/kubeedge: these images are not $image, the one tools/build/image.sh builds:" >&2
  echo "$bad" >&2
  exit 1
fi
grep -q "image: $image\$" deploy/kubeedge/deployment.yaml \
  || { echo "deploy/kubeedge/deployment.yaml runs no image $image" >&2; exit 1; }
