# Sourced by the repo's scripts: one place for the build cache and the asset folder.
# The cargo target dir lives outside the clone (rebuildable cache), so fresh clones on the same
# machine reuse it and never build the same thing twice.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/autoglm-edge/target}
export AUTOGLM_ASSETS=${AUTOGLM_ASSETS:-$root/.cache/assets}
