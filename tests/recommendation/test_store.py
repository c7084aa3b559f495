"""The SQLite feedback log: idempotent appends that survive reopening."""

from __future__ import annotations

from pathlib import Path

from services.recommendation.data import read_interactions
from services.recommendation.store import FeedbackStore, StoredEvent


def event(event_id: str, when: float = 100.0) -> StoredEvent:
    return StoredEvent(event_id, "u1", "i1", 4, 2.0, when)


def test_appends_are_idempotent_and_durable(tmp_path: Path) -> None:
    path = tmp_path / "feedback.db"
    store = FeedbackStore(path)
    assert store.append([event("a"), event("b")], received=1.0) == [True, True]
    assert store.append([event("b"), event("c")], received=2.0) == [False, True]
    store.close()
    reopened = FeedbackStore(path)
    assert reopened.count() == 3
    events, last = reopened.events_since(0.0)
    assert [e.event_id for e in events] == ["a", "b", "c"]
    later, _ = reopened.events_since(0.0, after_row=last)
    assert later == []
    reopened.close()


def test_training_reads_the_feedback_database(tmp_path: Path) -> None:
    path = tmp_path / "feedback.db"
    store = FeedbackStore(path)
    store.append([event("a", 50.0), event("b", 60.0)], received=1.0)
    store.close()
    log = read_interactions(path)
    assert len(log) == 2
    assert log.user_ids.tolist() == ["u1", "u1"]
