#!/usr/bin/env bash
# Check the gpu plugin on a machine with NVIDIA GPUs: cuda backend and local gpus=N, one worker
# per GPU, each seeing its own GPU first (NVML UUID), pinned to its GPU's CPUs, computing on it.
# One run takes well under 5 minutes. Prints PASS/FAIL lines and "DEVICE CHECK: PASS|FAIL".
#
#   bash plugins/gpu/device_check.sh           # from the repository root
#   PYTHONPATH=testing/src/dask_deploy_testing/_nvml_site DASK_DEPLOY_TESTING_FAKE_NVML="$(...)" bash ...
#                                              # dry run on fake GPUs, uv only (the GPU computation then fails)
#
# How it gets the project onto the machine:
#   - with uv and network (a developer machine): `uv run` installs the workspace;
#   - on a machine without network (the lent GPU machines): wheels carried in .whl/ are installed
#     with pip into /tmp/dask-deploy-site. Make them first, here:
#       bash plugins/gpu/device_check.sh --wheels    # dask, distributed & co + our two wheels
#     then run with .whl carried (its python3 must already have the rest: psutil, pluggy's
#     deps, cloudpickle, msgpack, toolz, pyyaml, click, jinja2, nvidia-ml-py, torch or cupy).
set -u -o pipefail
cd "$(dirname "$0")/../.."

if [ "${1:-}" = "--wheels" ]; then
    # Wheels for a CPython 3.12 x86-64 machine, same versions as uv.lock.
    mkdir -p .whl && rm -f .whl/dask_deploy*.whl
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform manylinux1_x86_64 -d .whl dask==2026.8.0 distributed==2026.8.0 tornado==6.6.1 \
        tblib==3.2.2 zict==3.0.0 locket==1.0.0 partd==1.4.2 pluggy==1.7.0 || exit 1
    uv build -q --wheel --package dask-deploy-core -o .whl && uv build -q --wheel --package dask-deploy-gpu -o .whl
    ls -la .whl
    exit
fi

echo "== nvidia-smi -L"
nvidia-smi -L || echo "nvidia-smi failed (rc=$?)"
nvidia-smi topo -m 2>/dev/null | head -20

PY=(python3)
if [ -z "${DEVICE_CHECK_WHEELS:-}" ] && command -v uv >/dev/null && [ -f uv.lock ]; then
    echo "== installing the workspace with uv"
    [ -d .venv ] || uv sync -q --all-packages || exit 1   # an existing (shared) .venv is left as it is
    PY=(uv run --no-sync python)
elif ls .whl/*.whl >/dev/null 2>&1; then
    echo "== installing carried wheels: $(ls .whl | tr '\n' ' ')"
    PY=("${PYTHON:-python3}")
    "${PY[@]}" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/dask-deploy-site .whl/*.whl || {
        echo "pip failed; unpacking the (pure Python / abi3) wheels instead"
        for w in .whl/*.whl; do "${PY[@]}" -m zipfile -e "$w" /tmp/dask-deploy-site || exit 1; done
    }
    export PYTHONPATH=/tmp/dask-deploy-site${PYTHONPATH:+:$PYTHONPATH}
else
    echo "no uv and no carried wheels in .whl/: run 'bash plugins/gpu/device_check.sh --wheels' first"
    exit 1
fi

echo "== device check"
PYTHONUNBUFFERED=1 timeout 360 "${PY[@]}" plugins/gpu/device_check.py
