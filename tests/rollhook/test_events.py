"""The one way an event and its jobs are made: they agree on id, time and trigger."""

from __future__ import annotations

from rollhook.events import new_event
from rollhook.jobs import ImageHint


def test_every_job_carries_the_events_trigger_and_time_in_target_order() -> None:
    image = ImageHint(repository="docker.io/acme/app", tag="1.2")
    event = new_event(
        "github",
        "push",
        dedup_key="github:d1",
        delivery_id="d1",
        actor="octocat",
        summary={"targets": ["b", "a"]},
        jobs={"b": {"ref": "abc1234"}, "a": {"image": image}},
    )
    assert [job.target for job in event.jobs] == ["a", "b"]
    assert {job.trigger.event_id for job in event.jobs} == {event.id}
    assert {job.received_at for job in event.jobs} == {event.received_at}
    assert event.jobs[0].image == image and event.jobs[1].ref == "abc1234"
    assert event.jobs[0].trigger.model_dump() == {
        "source": "github", "event_id": event.id, "delivery_id": "d1", "actor": "octocat",
    }  # fmt: skip
    assert not any(job.manual for job in event.jobs)
    assert len({job.id for job in event.jobs}) == 2


def test_a_persons_request_is_its_own_event_and_passes_as_manual() -> None:
    made = [
        new_event(
            "api",
            "rollback",
            dedup_key=None,
            delivery_id=None,
            actor="x" * 300,
            summary={},
            jobs={"llm": {"action": "rollback", "rollback_to": "d1"}},
            manual=True,
        )
        for _ in range(2)
    ]
    assert made[0].dedup_key != made[1].dedup_key  # never a duplicate of another request
    job = made[0].jobs[0]
    assert (job.action, job.rollback_to, job.manual) == ("rollback", "d1", True)
    assert made[0].actor == job.trigger.actor == "x" * 200  # the column's width
