#!/usr/bin/env bash
# Installs, from Debian's packages, what the integration tests start for real: CNCF Distribution
# (docker-registry), skopeo, containerd, dockerd, podman, htpasswd and openssl; ssh-keygen and sha256sum,
# which must agree with ferry on every bundle signature; par2 (par2cmdline), which must agree with
# ferry's recovery data; and for the far-side tests of the static binaries, qemu-user-static (the arm64
# one runs under qemu-aarch64-static), file, objdump and curl, and python3 with venv, where
# scripts/release.sh installs cargo-zigbuild and zig from PyPI. Skips apt when all present.
set -euo pipefail
needed=(docker-registry skopeo containerd ctr podman htpasswd openssl dockerd docker ssh-keygen sha256sum par2
    qemu-aarch64-static file objdump curl python3)
missing=()
for binary in "${needed[@]}"; do
    command -v "$binary" >/dev/null 2>&1 || missing+=("$binary")
done
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
echo "installing test services (missing: ${missing[*]})" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq docker-registry skopeo containerd podman apache2-utils openssl openssh-client coreutils par2 \
    qemu-user-static file binutils curl python3 python3-venv >/dev/null
# dockerd 20.10 without its recommends (no daemon is started by the package on this machine).
apt-get install -y -qq --no-install-recommends docker.io >/dev/null
