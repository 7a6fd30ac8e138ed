#!/usr/bin/env bash
# Installs what the integration tests need (registry, containerd, dockerd, podman, skopeo), checks
# formatting and lints, builds the static release binaries, and runs every test. Used as-is by .ci/run.
# A test whose service cannot start fails; FERRY_ALLOW_SKIP=1 skips such tests instead and lists each one
# at the end, as it lists the far-side tests when the static binaries were not built.
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/install-deps.sh
cargo fmt --all --check
cargo clippy --locked --workspace --all-targets -- -D warnings
FERRY_SKIP_LOG="$(mktemp)"
export FERRY_SKIP_LOG
# The banner comes last however the tests end: a failing test ends the script (set -e) with its status.
skipped_banner() {
    if [ -s "$FERRY_SKIP_LOG" ]; then
        echo "==================== SKIPPED: these tests did not run ====================" >&2
        cat "$FERRY_SKIP_LOG" >&2
    fi
    rm -f "$FERRY_SKIP_LOG"
}
trap skipped_banner EXIT
# The static x86_64 and arm64 binaries and their archives, which tests/it/far_side.rs checks (README:
# "Getting ferry onto the far side"). Cold, they cost more than the rest of the run (two release builds,
# C parts included), so they are built when what decides how they build differs from what was last checked
# with them: .ci/static-checked holds the digest of those files at the last run whose far-side tests passed,
# and a passing run that built them writes it anew (commit it). A checkout that has built them before
# rebuilds what changed. FERRY_STATIC_BUILD=always or never overrides.
static_inputs=(Cargo.lock Cargo.toml build.rs crates scripts .ci tests/run-all.sh tests/it/far_side.rs)
static_stamp=.ci/static-checked
static_inputs_digest() {
    git ls-files -z -- "${static_inputs[@]}" ":!:$static_stamp" | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-64
}
static_build_reason() {
    case "${FERRY_STATIC_BUILD:-auto}" in
    always) echo "FERRY_STATIC_BUILD=always"; return ;;
    never) return ;;
    auto) ;;
    *) echo "run-all.sh: FERRY_STATIC_BUILD=$FERRY_STATIC_BUILD: give always, never or auto" >&2; exit 2 ;;
    esac
    local target_dir="${CARGO_TARGET_DIR:-target}"
    if [ -e "$target_dir/x86_64-unknown-linux-musl/release/ferry" ] ||
        [ -e "$target_dir/aarch64-unknown-linux-musl/release/ferry" ]; then
        echo "built here before"
    elif [ "$(static_inputs_digest)" != "$(cat "$static_stamp" 2>/dev/null)" ]; then
        echo "${static_inputs[*]} differ from what $static_stamp records as checked"
    fi
}
static_reason="$(static_build_reason)"
if [ -n "$static_reason" ]; then
    echo "building the static binaries ($static_reason)" >&2
    bash scripts/release.sh
elif [ "${FERRY_STATIC_BUILD:-auto}" = never ]; then
    export FERRY_STATIC_NOT_BUILT="the static binaries were not built (FERRY_STATIC_BUILD=never)"
else
    export FERRY_STATIC_NOT_BUILT="the static binaries were not built: ${static_inputs[*]} are as $static_stamp records them checked (FERRY_STATIC_BUILD=always builds them)"
fi
cargo test --locked --workspace --all-targets "$@"
# The far-side tests passed with binaries built from these inputs: record them as checked.
if [ -n "$static_reason" ] && [ $# -eq 0 ] && git rev-parse -q --verify HEAD >/dev/null 2>&1; then
    static_inputs_digest > "$static_stamp"
fi
