#!/usr/bin/env bash
# Toolchains for the cross targets, idempotent (CI calls it on a fresh machine):
#   aarch64  -> rustup target + Debian's cross gcc/libc (linker) + qemu-user (test runner)
#   wasm     -> rustup target wasm32-wasip2 (the WASI component)
# Usage: tools/setup-cross.sh [aarch64] [wasm]   (no argument: both)
set -euo pipefail
want=${*:-aarch64 wasm}
sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
for t in $want; do
  case $t in
    aarch64)
      rustup target list --installed | grep -qx aarch64-unknown-linux-gnu \
        || rustup target add aarch64-unknown-linux-gnu
      if ! command -v aarch64-linux-gnu-gcc >/dev/null || ! command -v qemu-aarch64 >/dev/null \
        || [ ! -d /usr/aarch64-linux-gnu/lib ]; then
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
          gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user >/dev/null
      fi ;;
    wasm)
      rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2 ;;
    *) echo "unknown target '$t' (aarch64 | wasm)" >&2; exit 2 ;;
  esac
done
