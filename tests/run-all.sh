#!/usr/bin/env bash
# Installs what the integration tests need (registry, containerd, dockerd, podman, skopeo) and runs
# every test. Used as-is by .ci/run; with CI=true a test whose service cannot start fails.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x .ci/install-deps.sh ] || [ -f .ci/install-deps.sh ]; then
    bash .ci/install-deps.sh
fi
cargo test --locked --all-targets "$@"
