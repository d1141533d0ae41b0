#!/usr/bin/env bash
# What the ssh backend's tests need on a fresh Debian 12 machine (idempotent, run as root):
# an OpenSSH server (the tests start their own private sshd; none is started here), ps for
# the backend's process discovery, iproute2 for the optional multi-host tests, and the
# non-root user the tests log in as (sshd will not deliver signals to root sessions).
set -euo pipefail

need=()
command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh-keygen >/dev/null 2>&1 || need+=(openssh-client)
command -v ps >/dev/null 2>&1 || need+=(procps)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}"
fi
mkdir -p /run/sshd

user="${DASK_DEPLOY_SSH_TEST_USER:-dask-ssh-test}"
if ! id -u "$user" >/dev/null 2>&1; then
    useradd -m -s /bin/sh "$user"
fi
# A locked account ("!") is refused by sshd without PAM; "*" allows key logins only.
usermod -p '*' "$user"
