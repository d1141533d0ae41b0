#!/bin/sh
# Packages for the jobqueue backend's tests: a real single-node SLURM (the test fixtures
# write their own slurm.conf and start munged, slurmctld and slurmd themselves).
# Idempotent; runs as root on a fresh Debian 12 machine.
set -eu
if command -v sbatch >/dev/null 2>&1 && command -v slurmctld >/dev/null 2>&1 \
        && command -v slurmd >/dev/null 2>&1 && command -v munged >/dev/null 2>&1; then
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends slurmctld slurmd slurm-client munge
