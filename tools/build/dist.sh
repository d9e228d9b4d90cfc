#!/usr/bin/env bash
# The shipped `autoglm` binaries, static (musl libc linked in, no loader, no shared library):
#   x86_64-unknown-linux-musl   -> dist/linux-amd64/autoglm
#   aarch64-unknown-linux-musl  -> dist/linux-arm64/autoglm   (Raspberry Pi 4/5 on Pi OS
#                                  Bookworm or Bullseye, Jetson on JetPack 5 or 6)
# the layout the Containerfile copies from. They run on any Linux of either architecture
# whatever its libc (the glibc builds needed glibc >= 2.35). The allocator is mimalloc (the
# binary's global allocator: musl's own malloc is far slower on tract's large activations;
# BENCHMARKS.md, "Static binaries").
#
# Profile: `dist` (fat LTO, one codegen unit, stripped; panics still unwind, so `autoglm serve`
# survives a panic in one request); AUTOGLM_DIST_PROFILE=release builds the ordinary release
# profile instead (CI's image stage: it reuses what the aarch64 test stage compiled), stripped
# here after the build. The toolchains come from `tools/setup/cross.sh musl`.
# Extra arguments go to cargo build, e.g. `tools/build/dist.sh --no-default-features` leaves the
# embedded default package (+25 MB) out. The `ort` feature (ONNX Runtime, loaded with dlopen)
# is never part of these builds: a static binary cannot load shared libraries.
# Each binary is checked: static (no program interpreter, no DT_NEEDED entry), right machine.
# AUTOGLM_PLATFORMS (default "amd64 arm64") names the platforms to build, e.g. "arm64" alone
# (CI's cold runs: the aarch64 binary reuses the test stage's build, x86_64-musl is one more
# build of tract).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/../env.sh"
cd "$root"
profile=${AUTOGLM_DIST_PROFILE:-dist}
for a in "$@"; do
  case $a in
    *ort*) echo "tools/build/dist.sh: '$a': the static binaries cannot load ONNX Runtime (dlopen); build it with --features ort for a glibc target instead" >&2; exit 2 ;;
  esac
done
read_platforms tools/build/dist.sh
declare -A target_of=([amd64]=x86_64-unknown-linux-musl [arm64]=aarch64-unknown-linux-musl)
tools/setup/cross.sh musl
declare -A machine=([amd64]="Advanced Micro Devices X86-64" [arm64]="AArch64")
declare -A strip_tool=([amd64]=strip [arm64]=aarch64-linux-gnu-strip)
for a in "${platforms[@]}"; do
  target=${target_of[$a]}
  echo "== $target ($profile profile)" >&2
  start=$(date +%s)
  cargo build --locked --profile "$profile" --target "$target" -p autoglm-cli "$@"
  echo "   built in $(($(date +%s) - start)) s" >&2
  # cargo's output directory for the `dev` profile is `debug`.
  dir=$profile; [ "$dir" = dev ] && dir=debug
  install -D -m 0755 "$CARGO_TARGET_DIR/$target/$dir/autoglm" "dist/linux-$a/autoglm.new"
  [ "$profile" = dist ] || "${strip_tool[$a]}" "dist/linux-$a/autoglm.new"
  mv "dist/linux-$a/autoglm.new" "dist/linux-$a/autoglm"
done
for a in "${platforms[@]}"; do
  f=dist/linux-$a/autoglm
  m=$(readelf -h "$f" | sed -n 's/^ *Machine: *//p')
  [ "$m" = "${machine[$a]}" ] || { echo "$f: machine '$m', expected '${machine[$a]}'" >&2; exit 1; }
  if readelf -l "$f" | grep -q 'Requesting program interpreter' || readelf -d "$f" | grep -q '(NEEDED)'; then
    echo "$f is not static:" >&2; readelf -l -d "$f" | grep -E 'interpreter|NEEDED' >&2; exit 1
  fi
  file "$f" >&2
done
for a in "${platforms[@]}"; do ls -l "dist/linux-$a/autoglm" >&2; done
