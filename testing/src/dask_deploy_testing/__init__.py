"""dask-deploy's test servers and installers: a workspace member that is never published.

Submodules (import the one you need; importing this package imports none of them):
:mod:`.k8s` (Kubernetes API-server emulator), :mod:`.cloud` (moto + task runner),
:mod:`.slurm` (a private SLURM), :mod:`.sge` (a one-host Grid Engine),
:mod:`.torque` (SLURM's Torque wrappers), :mod:`.sshd` (a private sshd), :mod:`.fake_nvml` (fake GPUs),
:mod:`.gateway` (a dask-gateway server), :mod:`.terminal` (a pty runner), :mod:`.net` (free ports).
"""
