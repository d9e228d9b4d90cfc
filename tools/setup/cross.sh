#!/usr/bin/env bash
# Toolchains for the cross targets, idempotent (CI calls it on a fresh machine):
#   aarch64  -> rustup target aarch64-unknown-linux-gnu + Debian's cross gcc/libc (linker)
#               + qemu-user (test runner)
#   musl     -> the static targets x86_64- and aarch64-unknown-linux-musl (tools/build/dist.sh, the
#               aarch64 tests): rustup targets; Debian's musl-tools (musl-gcc: the C compiler
#               for x86_64-musl), gcc-aarch64-linux-gnu (aarch64 linker and ar: Rust's musl
#               targets link their own crt objects and libc.a, so a glibc cross linker does),
#               qemu-user; and zig (PyPI `ziglang`, in .cache/zig-venv) as the C compiler for
#               aarch64-musl (mimalloc, ring and tract-linalg's assembly need musl's headers for
#               aarch64, which Debian has no cross package of). The wrapper this writes is
#               installed twice: .cache/cross/aarch64-linux-musl-cc, which .cargo/config.toml
#               names (plain cargo commands in this clone), and the clone-independent path
#               tools/env.sh names (musl_cc_wrapper) and exports as CC_aarch64_unknown_linux_musl
#               unless the caller set that variable (the repo's scripts).
#   wasm     -> rustup target wasm32-wasip2 (the WASI component)
# Usage: tools/setup/cross.sh [aarch64] [musl] [wasm]   (no argument: all three)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/../env.sh"
want=${*:-aarch64 musl wasm}
sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
zig_version=0.17.1
rust_target() { rustup target list --installed | grep -qx "$1" || rustup target add "$1"; }
apt_get() {  # apt_get COMMAND... : installs the Debian packages given after the commands if one is missing
  local cmds=() pkgs=() a
  for a; do case $a in pkg:*) pkgs+=("${a#pkg:}") ;; *) cmds+=("$a") ;; esac; done
  for a in "${cmds[@]}"; do
    if ! command -v "$a" >/dev/null; then
      $sudo apt-get update -qq
      DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
      return
    fi
  done
}
for t in $want; do
  case $t in
    aarch64)
      rust_target aarch64-unknown-linux-gnu
      if ! command -v aarch64-linux-gnu-gcc >/dev/null || ! command -v qemu-aarch64 >/dev/null \
        || [ ! -d /usr/aarch64-linux-gnu/lib ]; then
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
          gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user >/dev/null
      fi ;;
    musl)
      rust_target x86_64-unknown-linux-musl
      rust_target aarch64-unknown-linux-musl
      apt_get musl-gcc aarch64-linux-gnu-gcc aarch64-linux-gnu-ar qemu-aarch64 \
        pkg:musl-tools pkg:gcc-aarch64-linux-gnu pkg:binutils-aarch64-linux-gnu pkg:qemu-user
      venv=$root/.cache/zig-venv
      zig=$(ls "$venv"/lib/python3*/site-packages/ziglang/zig 2>/dev/null || true)
      if [ -z "$zig" ] || [ "$("$zig" version)" != "$zig_version" ]; then
        python3 -m venv "$venv"
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "ziglang==$zig_version"
        zig=$(ls "$venv"/lib/python3*/site-packages/ziglang/zig)
      fi
      # cc-rs takes zig for clang and adds --target=aarch64-unknown-linux-musl, a triple zig
      # does not parse: the wrapper drops it and passes zig's own.
      wrapper=$(mktemp)
      cat > "$wrapper" <<WRAPPER
#!/bin/sh
# Written by tools/setup/cross.sh: zig's C compiler for aarch64-unknown-linux-musl.
n=\$#
for a do
  case \$a in --target=*) ;; *) set -- "\$@" "\$a" ;; esac
done
shift \$n
exec "$zig" cc -target aarch64-linux-musl "\$@"
WRAPPER
      for dst in "$root/.cache/cross/aarch64-linux-musl-cc" "$musl_cc_wrapper"; do
        install -D -m 0755 "$wrapper" "$dst.new"
        mv "$dst.new" "$dst"
      done
      rm -f "$wrapper" ;;
    wasm)
      rust_target wasm32-wasip2 ;;
    *) echo "unknown target '$t' (aarch64 | musl | wasm)" >&2; exit 2 ;;
  esac
done
