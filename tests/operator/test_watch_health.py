"""How the watches' health reaches the outside (the restarts metric, /readyz's staleness),
and kopf's own watches getting the same bounds. The faults themselves are played against the
real API server in ``tests/cluster/test_dead_connections.py``."""

from __future__ import annotations

from typing import Any

import kopf
import kubernetes

from archwarden import handlers, kube, settings


def runtime(**options: Any) -> handlers.Runtime:
    return handlers.Runtime(config=settings.Settings(kube=settings.KubeSettings(**options)))


def api_client() -> Any:
    return kubernetes.client.ApiClient(kubernetes.client.Configuration(host="https://127.0.0.1:1"))


def test_the_watch_connection_takes_the_settings_and_counts_restarts() -> None:
    rt = runtime(watch_seconds=7, watch_idle_seconds=9)
    connection = rt.watch_connection(api_client())
    assert (connection.watch_seconds, connection.idle_seconds) == (7, 9)
    assert connection.max_object_bytes == rt.config.limits.api_object_bytes
    assert connection.on_restart is not None
    connection.on_restart("nodes", "idle")
    connection.on_restart("nodes", "idle")
    sample = rt.metrics.registry.get_sample_value(
        "archwarden_watch_restarts_total", {"resource": "nodes", "reason": "idle"}
    )
    assert sample == 2


def test_the_inventory_is_stale_once_the_node_watch_is_down_past_the_bound() -> None:
    rt = runtime(inventory_stale_seconds=30)
    assert rt.inventory_stale() is None  # no watch yet: /readyz waits for the sync instead

    def nothing(_: Any) -> None:
        return None

    nodes = rt.watch_connection(api_client())
    rt.watches = [
        kube.Watch(nodes, "/api/v1/nodes", on_object=nothing, on_deleted=nothing, on_listed=nothing)
    ]
    watch = rt.watches[0]
    assert rt.inventory_stale() is None
    watch.last_problem = "idle: no byte within 25s"
    watch.disconnected_since = watch.heard - 29  # noticed, but within the bound
    assert rt.inventory_stale() is None
    watch.disconnected_since = watch.heard - 45
    stale = rt.inventory_stale()
    assert stale is not None
    assert stale.startswith("node watch down for 4")
    assert "(over 30s; idle: no byte within 25s)" in stale


def test_kopfs_own_watches_and_calls_get_the_same_bounds() -> None:
    kopf_settings = kopf.OperatorSettings()
    assert kopf_settings.watching.inactivity_timeout > 30  # kopf's own default: too late
    handlers.kopf_timeouts(kopf_settings, settings.KubeSettings())
    assert kopf_settings.watching.server_timeout == 20
    assert kopf_settings.watching.inactivity_timeout == 25
    assert kopf_settings.networking.request_timeout == 10
    assert kopf_settings.networking.connect_timeout == 10
