#!/usr/bin/env bash
# Benchmarks ferry against skopeo, docker (pull + save) and containerd (ctr pull + export), on the same
# images in one run: a local CNCF Distribution registry seeded with images shaped like Huawei CSI 4.8.0 for
# Kubernetes 1.28 (7 multi-arch public images, ~18 MB compressed each, sharing a base layer, content that
# gzip halves) plus 4 vendor docker-save tarballs (~75 MB each, uncompressed layers).
# Each tool builds the same linux/amd64 bundle; tools alternate; each is run ROUNDS times; the table shows
# median wall time, peak RSS (of the client process tree: dockerd and containerd do their work in their
# daemons, whose memory is not counted), output bytes, and ferry's ratios.
# It also times PAR2 recovery data against par2cmdline on the warm bundle (5% at par2's default 2000
# blocks; then a repair of 1% of the blocks, `ferry repair` verifying the bundle after it), `ferry verify` against `sha256sum` on the same file, pulls every image of the bundle with 8
# parallel skopeo clients from `ferry serve` and from the same images pushed into Distribution (wall time of
# the pulls, peak RSS of the server), and with BIG=1 bundles a 2 GB image to show that ferry's memory stays
# flat.
# Beside the ratios it prints floors measured in the same run (examples/floors.rs): one SHA-256 pass over the
# bundle with the sha2 crate (verify's floor), gzipping the distinct vendor layers on every core as ferry
# does plus the warm rebuild (the cold bundle's), and, from the deltas' section, `cp` of the bundle plus
# `sync` (the warm rebuild's: the two alternate there, each after a `sync`, so that neither pays for the
# writes of a tool before it). Wall times are taken to the microsecond.
#
# Usage: bash examples/bench.sh            (ROUNDS=3 PUBLIC_MB=36 VENDOR_MB=75 BIG=0 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
PUBLIC_MB=${PUBLIC_MB:-36}   # uncompressed bytes per public image and platform (gzip halves them)
VENDOR_MB=${VENDOR_MB:-75}   # uncompressed bytes per vendor image
BIG=${BIG:-0}

bash .ci/install-deps.sh
command -v /usr/bin/time >/dev/null || { apt-get install -y -qq time >/dev/null; }
cargo build --release --quiet --bin ferry --example bench_seed --example recovery --example floors
FERRY=$PWD/target/release/ferry
SEED=$PWD/target/release/examples/bench_seed
RECOVERY=$PWD/target/release/examples/recovery
FLOORS=$PWD/target/release/examples/floors

W=$(mktemp -d /tmp/ferry-bench.XXXXXX)
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; sleep 1; rm -rf "$W"; }
trap cleanup EXIT

# Runs "$@" under /usr/bin/time for its peak RSS, and writes "WALL RSS" to $W/time; the wall time is taken
# to the microsecond (`%e` counts in steps of 10 ms, too coarse for runs of a tenth of a second).
timed() {
  local start=$EPOCHREALTIME status=0
  /usr/bin/time -f "%M" -o "$W/rss" "$@" || status=$?
  local end=$EPOCHREALTIME
  awk -v start="$start" -v end="$end" -v rss="$(tail -1 "$W/rss")" 'BEGIN {printf "%.4f %s\n", end - start, rss}' > "$W/time"
  return $status
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { for _ in $(seq 1 300); do if eval "$1" >/dev/null 2>&1; then return 0; fi; sleep 0.1; done; echo "timed out: $1" >&2; exit 1; }

PORT=$(free_port); ADDR=127.0.0.1:$PORT
cat > "$W/registry.yml" <<EOF
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $W/registry}}
http: {addr: $ADDR}
EOF
docker-registry serve "$W/registry.yml" >"$W/registry.log" 2>&1 & PIDS+=($!)
wait_for "curl -sf http://$ADDR/v2/"

mkdir -p "$W/c" "$W/d"
cat > "$W/c/config.toml" <<EOF
version = 2
root = "$W/c/root"
state = "$W/c/state"
[grpc]
  address = "$W/c/c.sock"
EOF
containerd --config "$W/c/config.toml" >"$W/c/log" 2>&1 & PIDS+=($!)
CTR=(ctr --address "$W/c/c.sock" -n bench)
wait_for "${CTR[*]} version"
dockerd --iptables=false --ip6tables=false --bridge=none --storage-driver=vfs --data-root "$W/d/root" \
  --exec-root "$W/d/exec" --pidfile "$W/d/pid" -H "unix://$W/d/d.sock" --containerd "$W/c/c.sock" >"$W/d/log" 2>&1 & PIDS+=($!)
export DOCKER_HOST=unix://$W/d/d.sock
wait_for "docker version"

echo "seeding $ADDR: 7 public images x 4 platforms x ${PUBLIC_MB} MB, 4 vendor images x ${VENDOR_MB} MB ..." >&2
"$SEED" "$ADDR" "$W/vendor" $((PUBLIC_MB * 1000000)) $((VENDOR_MB * 1000000)) > "$W/seeded.txt"
PUBLIC=$(awk '{print $1}' "$W/seeded.txt" | sed 's#^registry.k8s.io/##')
VENDOR_NAMES="storage-backend-controller:4.8.0 storage-backend-sidecar:4.8.0 huawei-csi:4.8.0 huawei-csi-extender:4.8.0"

run_ferry() { # $1 = cache dir, $2 = output
  "$FERRY" bundle huawei-csi@4.8.0 --k8s 1.28 --vendor-dir "$W/vendor" --mirror "registry.k8s.io=$ADDR" \
    --cache-dir "$1" -o "$2" -q >/dev/null
}
# Each tool starts from nothing (`NAME_setup`, untimed, empties what it keeps between runs) and writes to a
# path that does not exist (the previous output is removed before the clock starts, as for `cp` below).
ferry_cold_setup() { rm -rf "$W/cache-cold"; }
ferry_cold() { run_ferry "$W/cache-cold" "$1"; }
ferry_warm() { run_ferry "$W/cache-warm" "$1"; }
skopeo_all() { # one copy per image into one docker-archive each (skopeo writes one image per docker-archive)
  mkdir -p "$1"
  for image in $PUBLIC; do
    skopeo copy -q --src-tls-verify=false "docker://$ADDR/$image" "docker-archive:$1/$(echo "$image" | tr '/:' '__').tar:registry.k8s.io/$image"
  done
  for tarball in "$W"/vendor/*.tar; do skopeo copy -q "docker-archive:$tarball" "docker-archive:$1/$(basename "$tarball")"; done
}
docker_all_setup() { docker image rm -f $(docker images -q) >/dev/null 2>&1 || true; }
docker_all() {
  local names=()
  for image in $PUBLIC; do
    docker pull -q "$ADDR/$image" >/dev/null && docker tag "$ADDR/$image" "registry.k8s.io/$image"
    names+=("registry.k8s.io/$image")
  done
  for tarball in "$W"/vendor/*.tar; do docker load -q -i "$tarball" >/dev/null; done
  docker save -o "$1" "${names[@]}" $VENDOR_NAMES
}
ctr_all_setup() { "${CTR[@]}" images rm $("${CTR[@]}" images ls -q) >/dev/null 2>&1 || true; }
ctr_all() {
  local names=()
  for image in $PUBLIC; do
    "${CTR[@]}" images pull --plain-http --platform linux/amd64 "$ADDR/$image" >/dev/null
    names+=("$ADDR/$image")
  done
  for tarball in "$W"/vendor/*.tar; do "${CTR[@]}" images import "$tarball" >/dev/null; done
  "${CTR[@]}" images export --platform linux/amd64 "$1" "${names[@]}" $(for n in $VENDOR_NAMES; do echo "docker.io/library/$n"; done)
}

: > "$W/results"
run_ferry "$W/cache-warm" "$W/prime.tar"   # the warm cache, filled before any timing
measure() { # label, function, output path
  local label=$1 fn=$2 out=$3
  if declare -F "${fn}_setup" >/dev/null; then "${fn}_setup"; fi
  rm -rf "$out"
  sync
  timed bash -c "$(declare -f "$fn" run_ferry ferry_platforms); $(declare -p W ADDR FERRY PUBLIC VENDOR_NAMES CTR 2>/dev/null); export DOCKER_HOST=$DOCKER_HOST; $fn '$out'"
  local bytes; bytes=$(du -sb "$out" | cut -f1)
  echo "$label $(cat "$W/time") $bytes" >> "$W/results"
}

for round in $(seq 1 "$ROUNDS"); do
  echo "round $round/$ROUNDS" >&2
  measure ferry-cold ferry_cold "$W/out-ferry-cold.tar"
  measure skopeo skopeo_all "$W/out-skopeo"
  measure ferry-warm ferry_warm "$W/out-ferry-warm.tar"
  measure docker docker_all "$W/out-docker.tar"
  measure ctr ctr_all "$W/out-ctr.tar"
done

# One bundle for a mixed amd64 + arm64 cluster against the two single-platform bundles it replaces (warm
# cache; once, as only the sizes are compared).
ferry_platforms() { # $1 = platforms, $2 = output
  "$FERRY" bundle huawei-csi@4.8.0 --k8s 1.28 --platform "$1" --vendor-dir "$W/vendor" --vendor-dir "$W/vendor-arm64" \
    --mirror "registry.k8s.io=$ADDR" --cache-dir "$W/cache-warm" -o "$2" -q >/dev/null
}
ferry_arm64() { ferry_platforms linux/arm64 "$1"; }
ferry_both() { ferry_platforms linux/amd64,linux/arm64 "$1"; }
measure ferry-arm64 ferry_arm64 "$W/out-ferry-arm64.tar"
measure ferry-2-platf ferry_both "$W/out-ferry-both.tar"

# The cold bundle's floor: the distinct vendor layers (as ferry imports them, each once) gzipped on every core
# as ferry does, plus the warm rebuild; the wall time goes in the results, the files are not counted.
mkdir -p "$W/layers"
for tarball in "$W"/vendor/*.tar; do
  for layer in $(tar -tf "$tarball" | grep '/layer.tar$'); do
    [ -f "$W/layers/${layer%%/*}" ] || tar -xOf "$tarball" "$layer" > "$W/layers/${layer%%/*}"
  done
done
echo "gzip-floor $("$FLOORS" gzip "$W"/layers/*) 0 $(du -cb "$W"/layers/* | tail -1 | cut -f1)" >> "$W/results"
rm -rf "$W/layers"

# Deltas: the base is the bundle of the public images alone (what a site has before the vendor's images
# change), the delta carries the rest. Building it (against the base file, of which its headers and
# documents are read, or against what `ferry inspect --json` said of it) against building the full
# bundle in the same rounds, alternating (`full-again`, warm cache: the runs take a few tenths of a second,
# so each of the three is timed DELTA_ROUNDS times under the same conditions); merging base and delta
# back into the full bundle against `cp` of that bundle, page cache warm for all.
"$FERRY" bundle huawei-csi@4.8.0 --k8s 1.28 --skip-vendor --mirror "registry.k8s.io=$ADDR" \
  --cache-dir "$W/cache-warm" -o "$W/base.tar" -q >/dev/null
"$FERRY" inspect "$W/base.tar" --json > "$W/base.json"
ferry_delta() { # $1 = output, $2 = base
  "$FERRY" bundle huawei-csi@4.8.0 --k8s 1.28 --vendor-dir "$W/vendor" --mirror "registry.k8s.io=$ADDR" \
    --cache-dir "$W/cache-warm" --since "$2" -o "$1" -q >/dev/null
}
FULL=$W/out-ferry-warm.tar
# Each run below starts with its inputs in the page cache: cp's (the bundle) and ferry's (the cache's blobs
# and notes, the vendor tarballs whose headers it reads). A virtual machine's host may page out what was
# not read for a few seconds (this project's machines run DAMON's pageout), which would time the disk.
warm_inputs() { cat "$W/base.tar" "$FULL" > /dev/null; find "$W/cache-warm" "$W/vendor" -type f -exec cat {} + > /dev/null; }
for round in $(seq 1 "${DELTA_ROUNDS:-7}"); do
  warm_inputs
  rm -f "$W/full-again.tar"
  sync
  timed bash -c "$(declare -f ferry_warm run_ferry); $(declare -p W ADDR FERRY); ferry_warm '$W/full-again.tar'"
  echo "full-again $(cat "$W/time") $(stat -c %s "$W/full-again.tar")" >> "$W/results"
  rm -f "$W/delta.tar"
  warm_inputs
  timed bash -c "$(declare -f ferry_delta); $(declare -p W ADDR FERRY); ferry_delta '$W/delta.tar' '$W/base.tar'"
  echo "delta-of-tar $(cat "$W/time") $(stat -c %s "$W/delta.tar")" >> "$W/results"
  rm -f "$W/delta.tar"
  warm_inputs
  timed bash -c "$(declare -f ferry_delta); $(declare -p W ADDR FERRY); ferry_delta '$W/delta.tar' '$W/base.json'"
  echo "delta-of-json $(cat "$W/time") $(stat -c %s "$W/delta.tar")" >> "$W/results"
  cat "$W/base.tar" "$W/delta.tar" > /dev/null
  rm -f "$W/merged.tar"
  timed "$FERRY" merge "$W/base.tar" "$W/delta.tar" -o "$W/merged.tar" -q >/dev/null
  echo "merge $(cat "$W/time") $(stat -c %s "$W/merged.tar")" >> "$W/results"
  cmp -s "$W/merged.tar" "$FULL" || { echo "merge is not byte-identical to the direct build" >&2; exit 1; }
  rm -f "$W/copy.tar"
  timed cp "$FULL" "$W/copy.tar"
  echo "cp $(cat "$W/time") $(stat -c %s "$W/copy.tar")" >> "$W/results"
  rm -f "$W/copy.tar"
  warm_inputs
  sync
  timed bash -c "cp '$FULL' '$W/copy.tar' && sync '$W/copy.tar'"
  echo "cp+sync $(cat "$W/time") $(stat -c %s "$W/copy.tar")" >> "$W/results"
done
# What the delta's file holds besides its blobs: tar headers and padding, and the JSON documents.
echo "delta-blobs 0 0 $("$FERRY" inspect "$W/delta.tar" --json | python3 -c 'import json, sys; print(sum(b["size"] for b in json.load(sys.stdin)["blobs"]))')" >> "$W/results"

# verify against sha256sum on the same file, page cache warm for both
BUNDLE=$W/out-ferry-warm.tar
rm -f "$BUNDLE.sha256"
cat "$BUNDLE" > /dev/null
verify_it() { "$FERRY" verify "$BUNDLE" >/dev/null; }
sha_it() { sha256sum "$BUNDLE" >/dev/null; }
echo "sha-floor $("$FLOORS" sha256 "$BUNDLE") 0 0" >> "$W/results"
for round in $(seq 1 "$ROUNDS"); do
  timed "$FERRY" verify "$BUNDLE" >/dev/null; echo "ferry-verify $(cat "$W/time") 0" >> "$W/results"
  timed sha256sum "$BUNDLE" >/dev/null; echo "sha256sum $(cat "$W/time") 0" >> "$W/results"
done

# load into containerd against ctr's own import of the same file, from an empty content store each time:
# ferry verifies, then feeds ctr a tar of what it proved, every blob hashed again on its way.
empty_store() {
  "${CTR[@]}" images rm $("${CTR[@]}" images ls -q) >/dev/null 2>&1 || true
  "${CTR[@]}" content rm $("${CTR[@]}" content ls -q) >/dev/null 2>&1 || true
}
for round in $(seq 1 "$ROUNDS"); do
  empty_store
  timed "$FERRY" load "$BUNDLE" --runtime containerd --address "$W/c/c.sock" \
    --namespace bench >/dev/null 2>&1
  echo "load-ferry $(cat "$W/time") 0" >> "$W/results"
  empty_store
  timed "${CTR[@]}" images import "$BUNDLE" >/dev/null
  echo "load-ctr $(cat "$W/time") 0" >> "$W/results"
done

# PAR2 recovery data for the same bundle, ferry against par2cmdline, alternating: creating 5% at 2000
# blocks (par2's default), then repairing 20 damaged blocks (1%). Each tool works on its own copy.
recovery_copy() { # $1 = dir: a fresh copy of the bundle and its .sha256
  rm -rf "$1"; mkdir -p "$1"; cp "$BUNDLE" "$1/b.tar"; (cd "$1" && sha256sum b.tar > b.tar.sha256)
}
damage_blocks() { # $1 = file: one byte flipped in each of 20 blocks of 2000
  python3 - "$1" <<'PY'
import os, sys
size = os.path.getsize(sys.argv[1]); block = -(-size // 2000)
with open(sys.argv[1], "r+b") as f:
    for k in range(20):
        f.seek(k * 97 % 2000 * block + 11); b = f.read(1); f.seek(-1, 1); f.write(bytes([b[0] ^ 0xFF]))
PY
}
for round in $(seq 1 "$ROUNDS"); do
  recovery_copy "$W/rec-ferry"; recovery_copy "$W/rec-par2"; sync
  timed "$RECOVERY" "$W/rec-ferry/b.tar" 5% >/dev/null
  echo "ferry-par2-create $(cat "$W/time") $(du -cb "$W"/rec-ferry/*.par2 | tail -1 | cut -f1)" >> "$W/results"
  timed par2 create -q -q -r5 "$W/rec-par2/b.tar" >/dev/null
  echo "par2-create $(cat "$W/time") $(du -cb "$W"/rec-par2/*.par2 | tail -1 | cut -f1)" >> "$W/results"
  damage_blocks "$W/rec-ferry/b.tar"; damage_blocks "$W/rec-par2/b.tar"; sync
  timed "$FERRY" repair "$W/rec-ferry/b.tar" >/dev/null
  echo "ferry-repair $(cat "$W/time") 0" >> "$W/results"
  timed par2 repair -q -q "$W/rec-par2/b.tar.par2" >/dev/null
  echo "par2-repair $(cat "$W/time") 0" >> "$W/results"
  cmp -s "$BUNDLE" "$W/rec-ferry/b.tar" && cmp -s "$BUNDLE" "$W/rec-par2/b.tar" || { echo "a repair is not byte-exact" >&2; exit 1; }
done
rm -rf "$W/rec-ferry" "$W/rec-par2"

# ferry serve against Distribution holding the same images (ferry push keeps every digest): 8 clients at
# once, each copying every image; RSS is the server's peak (VmHWM), each server a fresh process.
CLIENTS=8
PULLS=/dev/shm/ferry-bench-pulls.$$
SERVED=$("$FERRY" push "$BUNDLE" --to bench.invalid --dry-run | awk '{print $3}' | sed 's#^bench.invalid/##')
pull_all() { # $1 = registry address
  local clients=()
  for client in $(seq 1 "$CLIENTS"); do
    ( for image in $SERVED; do
        skopeo copy -q --src-tls-verify=false "docker://$1/$image" "dir:$PULLS/$client-$(echo "$image" | tr '/:' '__')"
      done ) &
    clients+=($!)
  done
  wait "${clients[@]}"
}
start_server() { # $1 = label: sets SERVER_ADDR and SERVER_PID
  local port; port=$(free_port)
  if [ "$1" = serve ]; then
    "$FERRY" serve "$BUNDLE" --listen "127.0.0.1:$port" --log-level warn >/dev/null 2>"$W/serve.log" &
  else
    sed "s#addr: .*#addr: 127.0.0.1:$port}#" "$W/registry.yml" | sed "s#rootdirectory: [^}]*#rootdirectory: $W/registry2#" > "$W/registry2.yml"
    docker-registry serve "$W/registry2.yml" >"$W/registry2.log" 2>&1 &
  fi
  SERVER_PID=$!; PIDS+=("$SERVER_PID"); SERVER_ADDR=127.0.0.1:$port
  wait_for "curl -sf http://$SERVER_ADDR/v2/"
}
stop_server() { kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; }
start_server distribution
"$FERRY" push "$BUNDLE" --to "$SERVER_ADDR" -q >/dev/null
stop_server
for round in $(seq 1 "$ROUNDS"); do
  for server in serve distribution; do
    start_server "$server"
    rm -rf "$PULLS"; mkdir -p "$PULLS"
    start=$(date +%s%N); pull_all "$SERVER_ADDR"; end=$(date +%s%N)
    hwm=$(awk '/VmHWM/ {print $2}' "/proc/$SERVER_PID/status")
    echo "$server-${CLIENTS}x $(awk "BEGIN {print ($end - $start) / 1e9}") $hwm $(du -sb "$PULLS" | cut -f1)" >> "$W/results"
    stop_server
  done
done
rm -rf "$PULLS"

if [ "$BIG" = 1 ]; then
  echo "seeding a 2 GB image ..." >&2
  "$SEED" big "$ADDR" 2000000000 > /dev/null
  timed "$FERRY" bundle --image registry.k8s.io/bench/big:v1 --mirror "registry.k8s.io=$ADDR" \
    --cache-dir "$W/cache-big" -o "$W/big.tar" -q
  echo "ferry-2GB $(cat "$W/time") $(stat -c %s "$W/big.tar")" >> "$W/results"
  timed "$FERRY" verify "$W/big.tar" >/dev/null
  echo "verify-2GB $(cat "$W/time") 0" >> "$W/results"
  # Recovery data's memory does not grow with the bundle: 5% of 2 GB, then a repair of 1%.
  timed "$RECOVERY" "$W/big.tar" 5% >/dev/null
  echo "par2-create-2GB $(cat "$W/time") $(du -cb "$W"/big.tar*.par2 | tail -1 | cut -f1)" >> "$W/results"
  damage_blocks "$W/big.tar"
  timed "$FERRY" repair "$W/big.tar" >/dev/null
  echo "repair-2GB $(cat "$W/time") 0" >> "$W/results"
fi

python3 - "$W/results" "$(nproc)" <<'EOF'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    label, wall, rss, size = line.split()
    rows.setdefault(label, []).append((float(wall), int(rss), int(size)))
med = {k: (statistics.median(w for w, _, _ in v), max(r for _, r, _ in v), statistics.median(s for _, _, s in v)) for k, v in rows.items()}
print(f"ferry benchmark: {len(next(iter(rows.values())))} rounds, {sys.argv[2]} cores; median wall, peak RSS of the client process tree")
print(f"{'tool':<14}{'wall s':>9}{'peak RSS MiB':>14}{'output MB':>11}")
for k, (w, r, s) in med.items():
    print(f"{k:<14}{w:>9.3f}{r/1024:>14.1f}{s/1e6:>11.1f}")
def ratio(a, b, i):
    return med[a][i] / med[b][i] if a in med and b in med and med[b][i] else float("nan")
print()
cold_floor = med['ferry-warm'][0] + med['gzip-floor'][0]
print(f"ferry cold / skopeo wall   {ratio('ferry-cold','skopeo',0):.2f}  (target <= 0.25; floor {cold_floor / med['skopeo'][0]:.2f}: "
      f"the warm rebuild {med['ferry-warm'][0]:.2f} s + gzipping the {med['gzip-floor'][2]/1e6:.0f} MB of distinct vendor layers on every core {med['gzip-floor'][0]:.2f} s)")
print(f"ferry warm / skopeo wall   {ratio('ferry-warm','skopeo',0):.2f}  (target <= 0.15)")
print(f"ferry warm / cp+sync wall  {ratio('full-again','cp+sync',0):.2f}  (target <= 1: the warm rebuild, {med['full-again'][0]:.3f} s, against cp of its bundle plus sync, "
      f"{med['cp+sync'][0]:.3f} s, alternating in the deltas' rounds; with one SHA-256 pass added, which cp does not make: "
      f"{(med['cp+sync'][0] + med['sha-floor'][0]) / med['cp+sync'][0]:.2f}; in the rounds above, after the other tools: {ratio('ferry-warm','cp+sync',0):.2f})")
print(f"ferry cold / docker wall   {ratio('ferry-cold','docker',0):.2f}")
print(f"ferry cold / ctr wall      {ratio('ferry-cold','ctr',0):.2f}")
print(f"ferry bytes / docker save  {ratio('ferry-cold','docker',2):.2f}  (target <= 0.60)")
print(f"ferry bytes / skopeo       {ratio('ferry-cold','skopeo',2):.2f}")
print(f"ferry bytes / ctr export   {ratio('ferry-cold','ctr',2):.2f}")
print(f"ferry peak RSS MiB         {max(med[k][1] for k in med if k.startswith('ferry'))/1024:.1f}  (target <= 32)")
print(f"verify / sha256sum wall    {ratio('ferry-verify','sha256sum',0):.2f}  (target <= 0.25)")
print(f"verify / one SHA-256 pass  {ratio('ferry-verify','sha-floor',0):.2f}  (target <= 1.3; one pass of the sha2 crate over the bundle: {med['sha-floor'][0]:.2f} s)")
print(f"load / ctr import wall     {ratio('load-ferry','load-ctr',0):.2f}  (verify, then a feed checked blob by blob)")
print(f"par2 create / ferry wall   {ratio('par2-create','ferry-par2-create',0):.2f}  (5% of the bundle, 2000 blocks; target >= 3)")
print(f"par2 repair / ferry wall   {ratio('par2-repair','ferry-repair',0):.2f}  (20 damaged blocks; ferry verifies after; target >= 1)")
print(f"recovery bytes ferry/par2  {ratio('ferry-par2-create','par2-create',2):.2f}")
if 'ferry-2-platf' in med:
    both, apart = med['ferry-2-platf'][2], med['ferry-warm'][2] + med['ferry-arm64'][2]
    print(f"2-platform / amd64+arm64   {both / apart:.2f}  ({both/1e6:.1f} MB against {apart/1e6:.1f} MB in two bundles)")
if 'merge' in med:
    print(f"delta (of the base's tar) / full bundle wall  {ratio('delta-of-tar','full-again',0):.2f}  (target <= 1.00; the full bundle built in the same rounds, {med['full-again'][0]:.2f} s)")
    print(f"delta (of inspect --json) / full bundle wall  {ratio('delta-of-json','full-again',0):.2f}  (target <= 1.00)")
    print(f"delta / full bundle bytes  {ratio('delta-of-tar','ferry-warm',2):.2f}  ({med['delta-of-tar'][2]/1e6:.1f} MB of {med['ferry-warm'][2]/1e6:.1f} MB)")
    print(f"delta bytes / its blobs    {ratio('delta-of-tar','delta-blobs',2):.4f}  (the rest: tar headers, JSON documents)")
    print(f"merge / cp+sync wall       {ratio('merge','cp+sync',0):.2f}  (disk speed: cp of the merged bundle plus sync, {med['cp+sync'][0]:.2f} s; merge copies each blob once "
          f"and hashes the output once; one SHA-256 pass, which cp does not make, is {med['sha-floor'][0]:.2f} s; merge / cp: {ratio('merge','cp',0):.2f})")
print(f"serve / Distribution wall  {ratio('serve-8x','distribution-8x',0):.2f}  (8 clients pulling every image)")
print(f"serve / Distribution RSS   {ratio('serve-8x','distribution-8x',1):.2f}  (peak RSS of the server)")
EOF
