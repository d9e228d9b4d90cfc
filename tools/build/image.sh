#!/usr/bin/env bash
# Builds the container image (Containerfile, FROM scratch) from the static binaries in dist/
# (tools/build/dist.sh) with podman, for linux/amd64 and linux/arm64, and checks what it built
# without running a container (no container may run in the build sandbox; nothing here needs
# one):
#   1. each image's config: architecture, user 65532:65532, entrypoint, command, AUTOGLM_ADDR;
#   2. its file system, from `podman create` + `podman export`: the one binary and nothing else,
#      static, of the image's architecture;
#   3. that binary classifies the README's texts with the embedded default package, with the
#      README's labels and scores, as uid 65532: amd64 under chroot into the exported file
#      system; arm64 under `qemu-aarch64 -cpu cortex-a72` with the exported file system as its
#      prefix (-L; Debian's qemu-aarch64 is itself dynamically linked, so it cannot run inside
#      a chroot holding one static file), TRACT_CPU_AARCH64_KIND=a72 as on a Pi 4; and mimalloc
#      is the allocator at work (MIMALLOC_VERBOSE);
#   4. amd64: the image's own entrypoint + command + environment, started under chroot as uid
#      65532 with a package mounted where the manifests put it, serves: /v2/health/ready, a
#      /v1/classify answer, exit status 0 after SIGTERM (listening on 127.0.0.1 and a free port
#      instead of the image's 0.0.0.0:8080, so that nothing on the host collides).
# Then the manifest list localhost/autoglm-edge:VERSION (VERSION = the workspace version; the
# name deploy/kubeedge/deployment.yaml runs) and dist/autoglm-edge-VERSION.oci.tar, an OCI
# archive of both platforms with gzip layers, for `skopeo copy`/`podman load` on nodes without a
# registry. Prints the image sizes.
# AUTOGLM_PLATFORMS (default "amd64 arm64", as for tools/build/dist.sh) names the platforms to
# build and check; the manifest list and the archive then hold those only, and check 4 runs
# where amd64 is one of them.
# Usage: tools/build/image.sh           build and check (podman from Debian's packages if missing)
#        tools/build/image.sh --name    print the image name only
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/../env.sh"
cd "$root"
version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"$/\1/p' Cargo.toml)
[ -n "$version" ] || { echo "no [workspace.package] version in Cargo.toml" >&2; exit 1; }
image=localhost/autoglm-edge:$version
case ${1:-} in
  --name) echo "$image"; exit 0 ;;
  "") ;;
  *) echo "usage: tools/build/image.sh [--name]" >&2; exit 2 ;;
esac
read_platforms tools/build/image.sh
sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
if ! command -v podman >/dev/null; then
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends podman >/dev/null
fi
command -v qemu-aarch64 >/dev/null || tools/setup/cross.sh musl
podman_bin=$(command -v podman)
podman() { $sudo "$podman_bin" "$@"; }
for a in "${platforms[@]}"; do
  [ -x "dist/linux-$a/autoglm" ] || { echo "dist/linux-$a/autoglm missing: run tools/build/dist.sh first" >&2; exit 1; }
done

work=$(mktemp -d)
chmod 0755 "$work"   # the image's user (65532) runs the arm64 binary from here
containers=()
cleanup() {
  [ ${#containers[@]} -eq 0 ] || podman rm -f "${containers[@]}" >/dev/null 2>&1 || true
  $sudo rm -rf "$work"
}
trap cleanup EXIT

# The README's texts and the embedded package's answer to them (its "embedded default" block).
mapfile -t expected < <(sed -n '/^== embedded default package (int8)$/,/^==/p' README.md | grep -v '^==')
[ ${#expected[@]} -ge 2 ] || { echo "README.md: no embedded-default example block found" >&2; exit 1; }
texts=() labels=()
for line in "${expected[@]}"; do texts+=("${line#*$'\t'*$'\t'}") labels+=("${line%%$'\t'*}"); done

# 1-2: build per platform, check config and file system.
podman manifest rm "$image" >/dev/null 2>&1 || podman rmi -f "$image" >/dev/null 2>&1 || true
for a in "${platforms[@]}"; do
  t0=$(date +%s)
  podman build -q --platform "linux/$a" --build-arg "VERSION=$version" -f Containerfile -t "$image-$a" . >/dev/null
  echo "== linux/$a: built $image-$a in $(($(date +%s) - t0)) s" >&2
  cfg=$(podman image inspect --format \
    '{{.Os}}/{{.Architecture}}|{{.Config.User}}|{{json .Config.Entrypoint}}|{{json .Config.Cmd}}' "$image-$a")
  want="linux/$a|65532:65532|[\"/usr/local/bin/autoglm\"]|[\"serve\"]"
  [ "$cfg" = "$want" ] || { echo "image config: $cfg, expected $want" >&2; exit 1; }
  podman image inspect --format '{{json .Config.Env}}' "$image-$a" | grep -q '"AUTOGLM_ADDR=0.0.0.0:8080"' \
    || { echo "image env lacks AUTOGLM_ADDR=0.0.0.0:8080" >&2; exit 1; }
  c=$(podman create --platform "linux/$a" "$image-$a")
  containers+=("$c")
  mkdir "$work/$a"
  podman export "$c" > "$work/$a.tar"
  files=$(tar -tvf "$work/$a.tar" | grep -v '^d' | awk '{print $NF}')
  [ "$files" = "usr/local/bin/autoglm" ] || { echo "unexpected files in the $a image: $files" >&2; exit 1; }
  $sudo tar -xf "$work/$a.tar" -C "$work/$a"
  bin=$work/$a/usr/local/bin/autoglm
  cmp -s "$bin" "dist/linux-$a/autoglm" || { echo "the $a image's binary is not dist/linux-$a/autoglm" >&2; exit 1; }
  if readelf -l "$bin" | grep -q 'program interpreter' || readelf -d "$bin" | grep -q '(NEEDED)'; then
    echo "the $a image's binary is not static" >&2; exit 1
  fi
done

# 3: classify as uid 65532 from the exported file systems.
chroot=$(command -v chroot) setpriv=$(command -v setpriv) qemu=$(command -v qemu-aarch64)
run_in() {  # run_in ARCH ENV... -- ARGS...: the exported binary of ARCH, as the image's user
  local a=$1 envs=(); shift
  while [ "$1" != -- ]; do envs+=("$1"); shift; done; shift
  if [ $a = amd64 ]; then
    $sudo env -i "${envs[@]}" "$chroot" --userspec=65532:65532 "$work/amd64" /usr/local/bin/autoglm "$@"
  else
    $sudo env -i "${envs[@]}" TRACT_CPU_AARCH64_KIND=a72 "$setpriv" --reuid=65532 --regid=65532 --clear-groups \
      "$qemu" -cpu cortex-a72 -L "$work/arm64" "$work/arm64/usr/local/bin/autoglm" "$@"
  fi
}
for a in "${platforms[@]}"; do
  t0=$(date +%s)
  got=$(run_in $a -- classify "${texts[@]}")
  # Labels and texts exactly; scores to within 0.001: the int8 package quantizes activations at
  # run time, and each CPU's float kernels round a little differently before a quantization, so
  # the fourth decimal may differ between architectures (README.md shows x86_64's).
  if ! awk -F'\t' 'NR == FNR { label[FNR] = $1; score[FNR] = $2; text[FNR] = $3; n = FNR; next }
      { d = $2 - score[FNR]; if ($1 != label[FNR] || $3 != text[FNR] || d > 0.001 || d < -0.001) bad = 1; m = FNR }
      END { exit (bad || m != n) }' <(printf '%s\n' "${expected[@]}") <(printf '%s\n' "$got"); then
    printf 'linux/%s classify gave\n%s\nexpected (README.md)\n%s\n' "$a" "$got" "$(printf '%s\n' "${expected[@]}")" >&2
    exit 1
  fi
  verbose=$(run_in $a MIMALLOC_VERBOSE=1 -- --version 2>&1)
  grep -q '^mimalloc: ' <<<"$verbose" \
    || { echo "linux/$a: mimalloc is not the allocator of the image's binary (MIMALLOC_VERBOSE=1 printed nothing of it)" >&2; exit 1; }
  echo "== linux/$a: the exported binary classifies the README's texts as the README says ($(($(date +%s) - t0)) s); allocator mimalloc" >&2
done

# 4: the amd64 image's own command serves.
serve_check() {
  # (one per line; the template's output ends in an empty line, dropped)
  mapfile -t cmd < <(podman image inspect --format '{{range .Config.Entrypoint}}{{println .}}{{end}}{{range .Config.Cmd}}{{println .}}{{end}}' "$image-amd64" | grep -v '^$')
  mapfile -t envs < <(podman image inspect --format '{{range .Config.Env}}{{println .}}{{end}}' "$image-amd64" | grep -v '^$')
  [ "${cmd[*]}" = "/usr/local/bin/autoglm serve" ] || { echo "image command: ${cmd[*]}" >&2; exit 1; }
  $sudo install -D -m 0644 models/sentiment-int8.tar "$work/amd64/models/sentiment.tar"
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  $sudo env -i "${envs[@]}" AUTOGLM_MODEL=sentiment=/models/sentiment.tar "AUTOGLM_ADDR=127.0.0.1:$port" \
    AUTOGLM_SHUTDOWN_GRACE_SECS=5 "$chroot" --userspec=65532:65532 "$work/amd64" "${cmd[@]}" 2> "$work/serve.log" &
  server=$!
  if ! python3 - "$port" "$(IFS=,; echo "${labels[*]}")" "${texts[@]}" <<'PY'; then
import json, sys, time, urllib.request
port, want, texts = sys.argv[1], sys.argv[2].split(","), sys.argv[3:]
base = f"http://127.0.0.1:{port}"
deadline = time.time() + 60
while True:
    try:
        with urllib.request.urlopen(base + "/v2/health/ready", timeout=2) as r:
            if r.status == 200:
                break
    except OSError:
        pass
    if time.time() > deadline:
        sys.exit("the server did not become ready within 60 s")
    time.sleep(0.2)
req = urllib.request.Request(base + "/v1/classify", data=json.dumps({"texts": texts}).encode(),
                             headers={"content-type": "application/json"})
with urllib.request.urlopen(req, timeout=30) as r:
    body = json.load(r)
labels = [r["label"] for r in body["results"]]
print("   /v1/classify:", json.dumps(body)[:300], file=sys.stderr)
if labels != want:
    sys.exit(f"labels {labels}, expected {want} (README.md)")
PY
    kill "$server" 2>/dev/null || true
    cat "$work/serve.log" >&2
    exit 1
  fi
  $sudo kill -TERM "$server" 2>/dev/null || kill -TERM "$server"
  rc=0; wait "$server" || rc=$?
  [ $rc = 0 ] || { cat "$work/serve.log" >&2; echo "the image's server exited $rc after SIGTERM" >&2; exit 1; }
  echo "== linux/amd64: the image's command served (ready, /v1/classify) and exited 0 on SIGTERM" >&2
}
if [[ " ${platforms[*]} " == *" amd64 "* ]]; then
  serve_check
else
  echo "== no amd64 image in this build (AUTOGLM_PLATFORMS=${platforms[*]}): the serve check (4) did not run" >&2
fi

# The multi-arch manifest list, and an archive of it.
podman manifest create "$image" >/dev/null
for a in "${platforms[@]}"; do podman manifest add "$image" "containers-storage:$image-$a" >/dev/null; done
rm -f "dist/autoglm-edge-$version.oci.tar"
podman manifest push -q --all --format oci "$image" "oci-archive:dist/autoglm-edge-$version.oci.tar"
echo "== $image (manifest list: ${platforms[*]/#/linux/}); sizes:" >&2
for a in "${platforms[@]}"; do
  printf '   linux/%s: image %s bytes (uncompressed)\n' "$a" "$(podman image inspect --format '{{.Size}}' "$image-$a")" >&2
done
printf '   dist/autoglm-edge-%s.oci.tar (these platforms, gzip layers): %s bytes\n' "$version" \
  "$(stat -c %s "dist/autoglm-edge-$version.oci.tar")" >&2
