#!/usr/bin/env bash
# Installs what the integration tests need (registry, containerd, dockerd, podman, skopeo), checks
# formatting and lints, and runs every test. Used as-is by .ci/run. A test whose service cannot start
# fails; FERRY_ALLOW_SKIP=1 skips such tests instead and lists each one at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/install-deps.sh
cargo fmt --check
cargo clippy --locked --all-targets -- -D warnings
FERRY_SKIP_LOG="$(mktemp)"
export FERRY_SKIP_LOG
# The banner comes last however the tests end: a failing test ends the script (set -e) with its status.
skipped_banner() {
    if [ -s "$FERRY_SKIP_LOG" ]; then
        echo "==================== SKIPPED: these tests did not run (FERRY_ALLOW_SKIP=1) ====================" >&2
        cat "$FERRY_SKIP_LOG" >&2
    fi
    rm -f "$FERRY_SKIP_LOG"
}
trap skipped_banner EXIT
cargo test --locked --all-targets "$@"
