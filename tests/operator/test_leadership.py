"""The leader's work in the handlers: started on leadership, cancelled the moment it is lost;
a follower serves and watches but neither re-evaluates nor posts the leader's Events."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from archwarden import handlers, metrics, pod_store, settings
from tests.policy import objects


class Posts:
    def __init__(self) -> None:
        self.posted: list[str] = []

    def post(self, ref: Any, kind: str, reason: str, message: str) -> None:
        self.posted.append(reason)


class Work:
    """A stand-in for the auditor and the gate keeper: runs until cancelled."""

    def __init__(self) -> None:
        self.running = 0
        self.cancelled = 0
        self.stopped = 0
        self.pods: list[str] = []

    async def run(self, ready: Callable[[], Awaitable[object]]) -> None:
        self.running += 1
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise

    def stop(self) -> None:
        self.stopped += 1

    def pod_changed(self, *args: Any) -> None:
        self.pods.append("changed")


def runtime() -> tuple[handlers.Runtime, Work, Work, Posts]:
    rt = handlers.Runtime(settings.Settings(), metrics=metrics.Metrics())
    auditor, keeper, posts = Work(), Work(), Posts()
    rt.auditor = auditor  # type: ignore[assignment]
    rt.gatekeeper = keeper  # type: ignore[assignment]
    rt.poster = posts  # type: ignore[assignment]
    rt.ready.set()
    return rt, auditor, keeper, posts


def sample(rt: handlers.Runtime, name: str, **labels: str) -> float | None:
    return rt.metrics.registry.get_sample_value(name, labels)


async def test_a_follower_neither_re_evaluates_nor_posts_the_leaders_events() -> None:
    rt, auditor, _, posts = runtime()
    rt.on_node(objects.node("a", "amd64"))
    assert rt.reevaluation is None  # the inventory is kept, nothing is judged
    assert len(rt.nodes) == 1
    rt.leader_post({"metadata": {"name": "w"}}, "Warning", "ArchitectureUnavailable", "m")
    assert posts.posted == []
    pod = pod_store.Pod("n", "p", "uid", "", "", "node", "Pending", (("c", "i"),))
    rt._pod_changed(None, pod)
    assert auditor.pods == []
    assert sample(rt, "archwarden_leader") == 0


async def test_leadership_starts_the_work_and_losing_it_cancels_it_at_once() -> None:
    rt, auditor, keeper, posts = runtime()
    rt.set_leading(True)
    await asyncio.sleep(0)
    assert (auditor.running, keeper.running) == (1, 1)
    assert sample(rt, "archwarden_leader") == 1
    rt.leader_post({"metadata": {"name": "w"}}, "Warning", "ArchitectureUnavailable", "m")
    assert posts.posted == ["ArchitectureUnavailable"]
    rt.on_node(objects.node("a", "amd64"))
    assert rt.reevaluation is not None
    reevaluation = rt.reevaluation

    rt.set_leading(False)
    # Cancelled synchronously: nothing of the leader's runs again once the loop turns.
    assert rt.leader_work and all(t.cancelling() or t.done() for t in rt.leader_work)
    assert reevaluation.cancelling()
    await asyncio.gather(*rt.leader_work, reevaluation, return_exceptions=True)
    assert (auditor.cancelled, keeper.cancelled, auditor.stopped) == (1, 1, 1)
    assert not rt.leader_work
    rt.leader_post({"metadata": {"name": "w"}}, "Warning", "ArchitectureUnavailable", "m2")
    assert posts.posted == ["ArchitectureUnavailable"]
    assert sample(rt, "archwarden_leader") == 0
    assert sample(rt, "archwarden_leader_transitions_total", change="started") == 1
    assert sample(rt, "archwarden_leader_transitions_total", change="stopped") == 1

    # Leading again resumes: the work starts anew, every workload is judged again.
    rt.set_leading(True)
    await asyncio.sleep(0)
    assert (auditor.running, keeper.running) == (2, 2)
    for _ in range(3):
        await asyncio.sleep(0)
    assert rt.reevaluate_all or rt.reevaluation is not None
    rt.set_leading(False)
    await asyncio.gather(*rt.leader_work, return_exceptions=True)


async def test_a_lone_process_leads_itself() -> None:
    config = settings.from_mapping({"leaderElection": {"enabled": False}})
    rt, auditor, _, _ = runtime()
    rt.config = config
    handlers._campaign(rt, connection=None)  # type: ignore[arg-type]
    await asyncio.sleep(0)
    assert rt.leading and rt.elector is None and auditor.running == 1
    rt.set_leading(False)
    await asyncio.gather(*rt.leader_work, return_exceptions=True)

    dev = handlers.Runtime(settings.Settings(), metrics=metrics.Metrics(), dev=True)
    handlers._campaign(dev, connection=None)  # type: ignore[arg-type]
    assert dev.leading
