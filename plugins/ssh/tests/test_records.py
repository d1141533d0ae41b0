"""What the cluster record keeps of the ssh options: no password, passphrase or PIN; keys as paths."""

from __future__ import annotations

import json
from pathlib import Path

import asyncssh
from dask_deploy import ClusterSpec
from dask_deploy._state import spec_from_dict, spec_to_dict
from dask_deploy_ssh._options import SSHOptions


def test_secret_connect_options_are_not_recorded_and_keys_become_paths(tmp_path: Path) -> None:
    on_disk = asyncssh.generate_private_key("ssh-ed25519")
    path = tmp_path / "id_ed25519"
    on_disk.write_private_key(str(path))  # (bcrypt, for encrypted keys, may be missing)
    loaded = asyncssh.read_private_key(str(path))
    in_memory = asyncssh.generate_private_key("ssh-ed25519")
    secret_pem = in_memory.export_private_key().decode()
    options = SSHOptions(
        hosts=("a", "b"),
        connect_options=[
            {"username": "me", "password": "hunter2", "passphrase": "key-passphrase",
             "client_keys": [loaded, str(path)], "pkcs11_pin": "1234", "port": 2222},
            {"username": "me", "client_keys": [in_memory], "known_hosts": None},
        ])
    spec = ClusterSpec(backend="ssh", name="t-rec", backend_options=options)
    text = json.dumps(spec_to_dict(spec))  # never fails, whatever key objects it holds
    for secret in ("hunter2", "key-passphrase", "1234", secret_pem.splitlines()[1]):
        assert secret not in text
    first, second = spec_from_dict(json.loads(text)).backend_options.connect_options
    assert dict(first) == {"username": "me", "client_keys": [str(path), str(path)], "port": 2222}
    assert dict(second) == {"username": "me", "known_hosts": None}  # an in-memory key is a secret
    assert "hunter2" not in repr(options)
