"""The emulator itself: moto's threaded server answers concurrent requests independently."""

from __future__ import annotations

import threading
from typing import Any

import boto3
from dask_deploy_testing.cloud import MotoServer


def test_tags_survive_a_concurrent_request_without_them() -> None:
    """One client asks for tags while another polls without them (as the task runner does).

    Unpatched moto shapes responses through a dict shared by all its threads, so the poller
    could strip the tags from the other's answer: the ECS backend's discovery and the cloud
    tests then saw no tasks at all (a CI failure of ``test_ecs_scale_and_logs_after_stop``).
    """
    server = MotoServer().start()
    try:
        def client() -> Any:
            return boto3.client("ecs", endpoint_url=server.endpoint_url, region_name=server.region,
                                aws_access_key_id="testing", aws_secret_access_key="testing")

        ecs = client()
        ecs.create_cluster(clusterName="tagged", tags=[{"key": "owner", "value": "me"}])
        stop = threading.Event()

        def poll() -> None:
            other = client()
            while not stop.is_set():
                other.describe_clusters(clusters=["tagged"])  # without include=["TAGS"]

        pollers = [threading.Thread(target=poll) for _ in range(2)]
        for p in pollers:
            p.start()
        try:
            answers = [ecs.describe_clusters(clusters=["tagged"], include=["TAGS"]) for _ in range(300)]
            untagged = sum(not a["clusters"][0].get("tags") for a in answers)
        finally:
            stop.set()
            for p in pollers:
                p.join()
        assert untagged == 0, f"{untagged} of 300 answers lost the tags they asked for"
    finally:
        server.stop()
