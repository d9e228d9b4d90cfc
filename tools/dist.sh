#!/usr/bin/env bash
# The shipped `autoglm` binaries: `cargo build --profile dist` (fat LTO, one codegen unit,
# stripped; panics still unwind, so `autoglm serve` survives a panic in one request) for
#   x86_64-unknown-linux-gnu   -> dist/linux-amd64/autoglm
#   aarch64-unknown-linux-gnu  -> dist/linux-arm64/autoglm   (Raspberry Pi 4/5, Jetson Orin)
# the layout the Containerfile copies from. The aarch64 linker comes from
# tools/setup-cross.sh (Debian's gcc-aarch64-linux-gnu). Both link glibc dynamically; the
# highest glibc symbol version each needs is printed (the target system needs at least that).
# Extra arguments go to cargo build, e.g. `tools/dist.sh --no-default-features` leaves the
# embedded default package (+25 MB) out. Slow: two full fat-LTO builds.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/env.sh"
cd "$root"
tools/setup-cross.sh aarch64
declare -A arch=([x86_64-unknown-linux-gnu]=amd64 [aarch64-unknown-linux-gnu]=arm64)
for target in x86_64-unknown-linux-gnu aarch64-unknown-linux-gnu; do
  rustup target list --installed | grep -qx "$target" || rustup target add "$target"
  echo "== $target" >&2
  cargo build --locked --profile dist --target "$target" -p autoglm-cli "$@"
  install -D -m 0755 "$CARGO_TARGET_DIR/$target/dist/autoglm" "dist/linux-${arch[$target]}/autoglm"
done
for f in dist/linux-amd64/autoglm dist/linux-arm64/autoglm; do
  glibc=$(readelf -V "$f" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -n 1)
  echo "$f: $(readelf -h "$f" | sed -n 's/^ *Machine: *//p'), needs ${glibc:-no glibc}"
done
ls -l dist/linux-*/autoglm
