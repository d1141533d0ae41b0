#!/usr/bin/env bash
# What the k8s backend's tests need on a fresh Debian 12 machine (idempotent, run as root):
# kubectl, to check the API-server emulator against the reference client. No Kubernetes
# cluster is installed (none can be, see shared/INFRA.md): the tests start their own emulator.
set -euo pipefail

if ! command -v kubectl >/dev/null 2>&1; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends kubernetes-client
fi
