# shellcheck shell=bash
# Sourced by the repo's scripts: one place for the build cache and the asset folder.
# The cargo target dir lives outside the clone (rebuildable cache), so fresh clones on the same
# machine reuse it and never build the same thing twice.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/autoglm-edge/target}
export AUTOGLM_ASSETS=${AUTOGLM_ASSETS:-$root/.cache/assets}

# The path of command $3 from the PyPI requirement $2, in the venv .cache/$1: made and installed
# the first time (the package index is needed only then), reused afterwards.
pypi_tool() {
  local venv=$root/.cache/$1
  if ! "$venv/bin/$3" --version >/dev/null 2>&1; then
    python3 -m venv "$venv" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$2" >&2
  fi
  echo "$venv/bin/$3"
}
