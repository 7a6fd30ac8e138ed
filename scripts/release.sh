#!/usr/bin/env bash
# Builds ferry for the air-gapped side: a static binary per target (musl, no dynamic section: it needs no
# libc of the machine, so RHEL 7's glibc 2.17 is no obstacle), and per target one archive holding it with
# the README, shell completions, man pages and SHA256SUMS over them, optionally signed.
#
#   scripts/release.sh [--sign KEY] [--out DIR] [--target TRIPLE]... [--no-build]
#
#   --sign KEY       sign each SHA256SUMS with this OpenSSH private key (ed25519 or ecdsa; the key --sign
#                    of `ferry bundle` takes), with `ssh-keygen -Y sign -n ferry-release`: SHA256SUMS.sig
#                    (ssh-keygen asks for an encrypted key's passphrase at each of the signatures)
#   --out DIR        where the archives go [default: target/dist]
#   --target TRIPLE  x86_64-unknown-linux-musl or aarch64-unknown-linux-musl (repeatable) [default: both]
#   --no-build       package the binaries already built in target/TRIPLE/release/
#
# Writes DIR/ferry-VERSION-TRIPLE.tar.gz per target, and DIR/SHA256SUMS (with --sign, SHA256SUMS.sig)
# over the archives.
#
# What it installs when missing: the rustup targets, and, from PyPI into target/release-tools (a venv),
# cargo-zigbuild with ziglang: zig is the C compiler and linker for both targets, so the C parts (libzstd
# and aws-lc, rustls's crypto provider) build for arm64 and against musl with nothing from apt, and the
# same way on any Linux build machine.
set -euo pipefail
# --sign and --out name paths from where the script was called, not from the repository it works in.
caller="$PWD"
cd "$(dirname "$0")/.."
umask 022

CARGO_ZIGBUILD_VERSION=0.24.1
ZIGLANG_VERSION=0.17.1
# The namespace keeps a release signature apart from a bundle's (-n ferry): both sign sha256sum lists.
SIGNATURE_NAMESPACE=ferry-release

sign_key=""
out=""
build=1
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
    --sign) sign_key="${2:?--sign needs a KEY}"; shift 2 ;;
    --out) out="${2:?--out needs a DIR}"; shift 2 ;;
    --target) targets+=("${2:?--target needs a TRIPLE}"); shift 2 ;;
    --no-build) build=0; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "release.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
[ ${#targets[@]} -gt 0 ] || targets=(x86_64-unknown-linux-musl aarch64-unknown-linux-musl)
for target in "${targets[@]}"; do
    case "$target" in
    x86_64-unknown-linux-musl | aarch64-unknown-linux-musl) ;;
    *) echo "release.sh: --target $target: only x86_64-unknown-linux-musl and aarch64-unknown-linux-musl are built" >&2; exit 2 ;;
    esac
done
from_caller() {
    case "$1" in
    /*) echo "$1" ;;
    *) echo "$caller/$1" ;;
    esac
}
[ -z "$sign_key" ] || sign_key="$(from_caller "$sign_key")"
[ -z "$out" ] || out="$(from_caller "$out")"
if [ -n "$sign_key" ] && [ ! -f "$sign_key" ]; then
    echo "release.sh: --sign $sign_key: no such key file" >&2
    exit 2
fi
target_dir="$(realpath -m "${CARGO_TARGET_DIR:-target}")"
out="${out:-$target_dir/dist}"

# The pinned cargo-zigbuild and zig, in a venv of their own: the same compilers on every build machine,
# and the same paths, so that cargo's fingerprints (which include the linker's path) stay warm.
tools="$target_dir/release-tools"

install_tools() {
    if command -v rustup >/dev/null; then
        local installed
        installed="$(rustup target list --installed)"
        for target in "${targets[@]}"; do
            grep -qx "$target" <<<"$installed" || rustup target add "$target"
        done
    fi
    if [ "$("$tools/bin/cargo-zigbuild" --version 2>/dev/null)" != "cargo-zigbuild $CARGO_ZIGBUILD_VERSION" ] ||
        [ "$("$tools/bin/python3" -m ziglang version 2>/dev/null)" != "$ZIGLANG_VERSION" ]; then
        echo "installing cargo-zigbuild $CARGO_ZIGBUILD_VERSION and ziglang $ZIGLANG_VERSION from PyPI into $tools" >&2
        python3 -m venv "$tools"
        "$tools/bin/pip" install --quiet --disable-pip-version-check \
            "cargo-zigbuild==$CARGO_ZIGBUILD_VERSION" "ziglang==$ZIGLANG_VERSION"
    fi
}

build_binaries() {
    local args=() started=$SECONDS
    for target in "${targets[@]}"; do
        args+=(--target "$target")
    done
    # One cargo run for every target: the two builds share the cores. zig finds its python in PATH.
    PATH="$tools/bin:$PATH" "$tools/bin/cargo-zigbuild" zigbuild --locked --release "${args[@]}"
    echo "built ${targets[*]} in $((SECONDS - started)) s" >&2
}

binary() {
    echo "$target_dir/$1/release/ferry"
}

# The binary that runs here writes the completions and man pages for every archive: they come from the
# clap definitions, which are the same on every target.
runnable_binary() {
    for target in "${targets[@]}"; do
        if "$(binary "$target")" -V >/dev/null 2>&1; then
            binary "$target"
            return
        fi
    done
    echo "release.sh: none of the built binaries (${targets[*]}) runs on this machine to write the completions and man pages" >&2
    exit 1
}

sign() {
    rm -f "$1.sig"
    ssh-keygen -Y sign -q -f "$sign_key" -n "$SIGNATURE_NAMESPACE" "$1"
}

# Lists every file under $1 except the lists themselves, for `sha256sum -c` run inside $1.
write_sums() {
    (cd "$1" && find . -type f ! -name 'SHA256SUMS*' -printf '%P\n' | LC_ALL=C sort | xargs -d '\n' sha256sum) >"$1/SHA256SUMS"
}

package() {
    local target="$1" ferry="$2" version="$3" stage="$4"
    local name="ferry-$version-$target"
    local dir="$stage/$name"
    mkdir -p "$dir/completions" "$dir/man/man1"
    install -m 0755 "$(binary "$target")" "$dir/ferry"
    install -m 0644 README.md "$dir/README.md"
    "$ferry" completions bash >"$dir/completions/ferry.bash"
    "$ferry" completions zsh >"$dir/completions/_ferry"
    "$ferry" completions fish >"$dir/completions/ferry.fish"
    "$ferry" completions powershell >"$dir/completions/_ferry.ps1"
    "$ferry" manpages "$dir/man/man1" >/dev/null
    chmod 0644 "$dir"/completions/* "$dir"/man/man1/*
    write_sums "$dir"
    [ -z "$sign_key" ] || sign "$dir/SHA256SUMS"
    # The same inputs give the same archive: names sorted, owners and times fixed, no gzip timestamp.
    tar --sort=name --mtime="@$epoch" --owner=0 --group=0 --numeric-owner --format=gnu \
        -C "$stage" -cf - "$name" | gzip -n -9 >"$out/$name.tar.gz"
    echo "$out/$name.tar.gz" >&2
}

if [ "$build" = 1 ]; then
    install_tools
    build_binaries
fi
for target in "${targets[@]}"; do
    [ -x "$(binary "$target")" ] || { echo "release.sh: $(binary "$target") is not built (run without --no-build)" >&2; exit 1; }
done
ferry="$(runnable_binary)"
version="$("$ferry" -V | awk '{print $2}')"
epoch="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}"
mkdir -p "$out" "$target_dir"
stage="$(mktemp -d "$target_dir/release-stage.XXXXXX")"
trap 'rm -rf "$stage"' EXIT
archives=()
for target in "${targets[@]}"; do
    package "$target" "$ferry" "$version" "$stage"
    archives+=("ferry-$version-$target.tar.gz")
done
(cd "$out" && sha256sum "${archives[@]}") >"$out/SHA256SUMS"
[ -z "$sign_key" ] || sign "$out/SHA256SUMS"
