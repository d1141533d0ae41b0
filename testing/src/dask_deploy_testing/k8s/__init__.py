"""Test infrastructure: an emulated Kubernetes API server with a "process kubelet".

No real API server can run on our CI machines (no kube-apiserver, k3s, kind or docker), so
this package emulates the part of one that the backend uses, over real HTTP, so that the
unmodified ``kubernetes-asyncio`` client and ``kubectl --server`` talk to it exactly as to
a cluster: namespaces, pods, services, secrets and configmaps (CRUD, label and field
selectors, watch with ``resourceVersion`` resume and 410 Gone, the ``status`` subresource,
``Status`` errors, ``ownerReferences`` with cascading deletion, graceful pod deletion),
``pods/log`` (also ``follow``), ``pods/portforward`` (websocket) and ``services/proxy``.

Its one node runs each pod's containers as local processes with their own loopback address
(``status.podIP``), and a kube-proxy forwards each Service's ``clusterIP:port`` to a ready pod.
See ``_kubelet`` for the documented deviations (no images, no mount namespaces).

>>> with Emulator(tmpdir) as k8s:                                   # doctest: +SKIP
...     cluster = Cluster.from_name("k8s", **k8s.backend_options(n_workers=2))
"""

from ._server import ApiServer, Emulator, kubeconfig, main

__all__ = ["ApiServer", "Emulator", "kubeconfig", "main"]
