"""Check the gpu plugin on a machine with real NVIDIA GPUs; run by ``device_check.sh``.

Starts ``Cluster.from_name("cuda")`` and ``Cluster.from_name("local", n_workers=1, gpus=N)``,
and checks in every worker (through ``client.run``, with plain pynvml, no fake): one worker per
GPU, its first visible device is its own GPU (by NVML UUID), its CPU affinity is its GPU's
nearest CPUs (those this process may use), and a small computation on the GPU sees the same
device (by the CUDA runtime's UUID). Prints ``PASS``/``FAIL`` lines and a summary; exits 1 on
any failure.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from typing import Any

RESULTS: list[bool] = []
TIMEOUT = 180


def check(what: str, ok: bool, detail: object = "") -> bool:
    RESULTS.append(bool(ok))
    print(f"{'PASS' if ok else 'FAIL'}  {what}" + (f"  [{detail}]" if detail != "" else ""), flush=True)
    return bool(ok)


def probe(dask_worker: Any = None) -> dict[str, Any]:
    """In a worker: what it sees, read with pynvml (faked only for a dry run, see device_check.sh)."""
    import os

    from dask_deploy_gpu._nvml import nvml

    pynvml = nvml()  # the pynvml module itself (patched only in a dry run's processes)
    pynvml.nvmlInit()
    try:
        first = os.environ["CUDA_VISIBLE_DEVICES"].split(",")[0]
        h = (pynvml.nvmlDeviceGetHandleByIndex(int(first)) if first.isdigit()
             else pynvml.nvmlDeviceGetHandleByUUID(first))
        uuid = pynvml.nvmlDeviceGetUUID(h)
    finally:
        pynvml.nvmlShutdown()
    return {"name": dask_worker.name, "uuid": uuid.decode() if isinstance(uuid, bytes) else uuid,
            "env": {k: v for k, v in os.environ.items()
                    if k.startswith(("CUDA_VISIBLE", "CUDA_DEVICE", "DASK_DEPLOY"))
                    and k != "DASK_DEPLOY_TESTING_FAKE_NVML"},
            "affinity": sorted(os.sched_getaffinity(0)),
            "threads": sorted({tuple(sorted(os.sched_getaffinity(int(t))))
                               for t in os.listdir("/proc/self/task")}),
            "nthreads": dask_worker.state.nthreads, "resources": dict(dask_worker.state.total_resources)}


def gpu_task() -> dict[str, Any]:
    """A small computation on the worker's GPU 0, reporting which device CUDA gave it."""
    import os

    out: dict[str, Any] = {"affinity": sorted(os.sched_getaffinity(0))}
    try:
        import torch

        x = torch.ones(1024, 1024, device="cuda")
        out.update(lib=f"torch {torch.__version__}", sum=float((x @ x).sum().item()),
                   uuid=str(torch.cuda.get_device_properties(0).uuid), count=torch.cuda.device_count())
    except ImportError:
        import cupy

        x = cupy.ones((1024, 1024), dtype=cupy.float32)
        raw = cupy.cuda.runtime.getDeviceProperties(0)["uuid"]
        out.update(lib=f"cupy {cupy.__version__}", sum=float((x @ x).sum()), uuid=raw.hex(),
                   count=cupy.cuda.runtime.getDeviceCount())
    return out


def _hex(uuid: str) -> str:
    return uuid.lower().removeprefix("gpu-").replace("-", "")


def check_cluster(label: str, cluster: Any, devices: list[Any], names: list[str]) -> None:
    from distributed import Client

    allowed = set(os.sched_getaffinity(0))
    with Client(cluster) as client:
        t0 = time.monotonic()
        client.wait_for_workers(len(names), timeout=TIMEOUT)
        print(f"      {label}: {len(names)} worker(s) up in {time.monotonic() - t0:.1f}s", flush=True)
        seen = {r["name"]: r for r in client.run(probe).values()}
        check(f"{label}: one worker per GPU, named after it", sorted(seen) == sorted(names), sorted(seen))
        for name, dev in zip(names, devices, strict=True):
            w = seen.get(name)
            if w is None:
                check(f"{label}: {name} is there", False)
                continue
            print(f"      {name}: {w['env']} nthreads={w['nthreads']} resources={w['resources']}", flush=True)
            check(f"{label}: {name} sees its own GPU first (NVML UUID)", w["uuid"] == dev.uuid,
                  f"{w['uuid']} vs {dev.uuid}")
            want = sorted(set(dev.cpus) & allowed) or sorted(allowed)
            check(f"{label}: {name} pinned to its GPU's nearest CPUs", w["affinity"] == want
                  and w["threads"] == [tuple(want)], f"{len(w['affinity'])} CPUs, NVML says {len(dev.cpus)}")
            check(f"{label}: {name} has resources GPU=1", w["resources"].get("GPU") == 1)
            try:
                r = client.submit(gpu_task, workers=[name], resources={"GPU": 1}, pure=False).result(TIMEOUT)
            except Exception as e:
                check(f"{label}: {name} computes on the GPU", False, repr(e))
                continue
            check(f"{label}: {name} computes on the GPU ({r['lib']})", r["sum"] == 1024.0**3, r["sum"])
            check(f"{label}: {name}'s CUDA device 0 is its own GPU (CUDA UUID)",
                  _hex(r["uuid"]) == _hex(dev.uuid), f"{r['uuid']}, {r['count']} device(s) visible")
            check(f"{label}: {name}'s task thread is pinned too", r["affinity"] == want)


def main() -> int:
    from importlib.metadata import version

    import dask
    import distributed
    from dask_deploy import Cluster, SpecError
    from dask_deploy_gpu._nvml import all_devices, resolve

    print(f"python {sys.version.split()[0]} ({sys.executable}); dask {dask.__version__}; "
          f"distributed {distributed.__version__}; nvidia-ml-py {version('nvidia-ml-py')}; "
          f"{os.cpu_count()} CPUs, {len(os.sched_getaffinity(0))} usable", flush=True)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [s.strip() for s in visible.split(",") if s.strip()] if visible else None
    try:
        devices = resolve(ids) if ids else all_devices()
    except Exception as e:
        check("NVML finds the GPUs", False, repr(e))
        return 1
    for d in devices:
        print(f"      {d.visible_id}: {d.name} {d.uuid} {d.memory >> 20} MiB, {len(d.cpus)} nearest CPUs",
              flush=True)
    if not check("NVML finds the GPUs", len(devices) > 0, len(devices)):
        return 1
    n = len(devices)
    ids = ids or [d.visible_id for d in devices]
    print(f"      CUDA_VISIBLE_DEVICES={visible!r}; usable CPUs {sorted(os.sched_getaffinity(0))}",
          flush=True)

    t0 = time.monotonic()
    with Cluster.from_name("cuda", name="devcheck-cuda") as cluster:
        check_cluster("cuda", cluster, devices, [f"devcheck-cuda-0-{i}" for i in ids])
    print(f"      cuda backend round trip {time.monotonic() - t0:.1f}s", flush=True)

    t0 = time.monotonic()
    with Cluster.from_name("local", n_workers=1, gpus=n, name="devcheck-local") as cluster:
        check_cluster(f"local gpus={n}", cluster, devices, [f"devcheck-local-0-{i}" for i in range(n)])
    print(f"      local gpus={n} round trip {time.monotonic() - t0:.1f}s", flush=True)

    try:
        cluster = Cluster.from_name("local", n_workers=1, gpus=n + 1, name="devcheck-toomany")
    except SpecError as e:
        check(f"local gpus={n + 1}: a clear error naming what was looked for",
              "NVML" in str(e) or "CUDA_VISIBLE_DEVICES" in str(e), e)
    else:
        cluster.close()
        check(f"local gpus={n + 1}: a clear error naming what was looked for", False, "no error")
    return 0


if __name__ == "__main__":
    try:
        code = main()
    except Exception:
        traceback.print_exc()
        check("the device check ran to its end", False)
        code = 1
    failed = RESULTS.count(False)
    print(f"DEVICE CHECK: {'PASS' if failed == 0 and code == 0 else 'FAIL'} "
          f"({len(RESULTS) - failed} passed, {failed} failed)", flush=True)
    sys.exit(1 if failed or code else 0)
