#!/bin/sh
# Packages for the jobqueue backends' tests (idempotent; runs as root on a fresh Debian 12
# machine). Nothing is started here: the test fixtures start and stop their own daemons.
#
# * a real single-node SLURM (the fixtures write their own slurm.conf and start munged,
#   slurmctld and slurmd);
# * Son of Grid Engine (master, exec daemon, client), configured non-interactively through
#   debconf; the sge fixture (dask_deploy_testing.sge) configures the queue and starts
#   sge_qmaster and sge_execd itself;
# * SLURM's Torque wrappers (qsub/qstat/qdel over SLURM) for the pbs backend, unpacked into
#   a private folder, not installed: the package conflicts with gridengine-client (both own
#   /usr/bin/qsub). The pbs tests put its usr/bin first on PATH for the pbs commands only.
set -eu
export DEBIAN_FRONTEND=noninteractive
TORQUE_DIR="${DASK_DEPLOY_TORQUE_DIR:-/opt/dask-deploy/slurm-torque}"

need=""
for c in sbatch slurmctld slurmd munged; do
    command -v "$c" >/dev/null 2>&1 || need="slurmctld slurmd slurm-client munge"
done
if [ ! -x /usr/lib/gridengine/sge_qmaster ] || [ ! -x /usr/lib/gridengine/sge_execd ] \
        || ! command -v qconf >/dev/null 2>&1; then
    need="$need gridengine-master gridengine-exec gridengine-client"
    host="$(hostname)"
    for p in gridengine-master gridengine-exec gridengine-client gridengine-common; do
        cat <<EOF | debconf-set-selections
$p shared/gridengineconfig boolean true
$p shared/gridenginecell string default
$p shared/gridenginemaster string $host
EOF
    done
fi
# The Torque wrappers are Perl over SLURM's Perl bindings (these do not conflict).
if ! dpkg -s libslurm-perl libslurmdb-perl libswitch-perl >/dev/null 2>&1; then
    need="$need libslurm-perl libslurmdb-perl libswitch-perl"
fi
updated=""
if [ -n "$need" ]; then
    apt-get update
    updated=1
    # shellcheck disable=SC2086
    apt-get install -y --no-install-recommends $need
    # The packages' init scripts may have started daemons with the system configuration
    # (where policy-rc.d allows it); the fixtures start their own, by PID, after setting up
    # the host aliases, so stop any that came up here.
    for d in exec master; do
        [ -x /etc/init.d/gridengine-$d ] && /etc/init.d/gridengine-$d stop >/dev/null 2>&1 || true
    done
fi

if [ ! -x "$TORQUE_DIR/usr/bin/qsub" ]; then
    [ -n "$updated" ] || apt-get update
    tmp="$(mktemp -d)"; chmod 755 "$tmp"  # apt downloads as user _apt
    (cd "$tmp" && apt-get download slurm-wlm-torque)
    mkdir -p "$TORQUE_DIR"
    dpkg-deb -x "$tmp"/slurm-wlm-torque_*.deb "$TORQUE_DIR"
    rm -rf "$tmp"
fi
# The wrappers run SLURM's commands from their own folder (qsub: $FindBin::Bin/sbatch).
for c in sbatch salloc srun scancel squeue scontrol; do
    [ -e "$TORQUE_DIR/usr/bin/$c" ] || ln -s "/usr/bin/$c" "$TORQUE_DIR/usr/bin/$c"
done
