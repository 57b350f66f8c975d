"""The task event source keeps at most one waiting state per object, and never loses a
deletion or an object recreated under the same name (watch.coalesce)."""

from __future__ import annotations

from typing import Any

from taskwarden import watch


def obj(uid: str, rv: str) -> dict[str, Any]:
    return {"metadata": {"namespace": "ns", "name": "t", "uid": uid, "resourceVersion": rv}}


def test_a_newer_state_of_the_same_object_replaces_the_waiting_one() -> None:
    queue: list[tuple[str, dict[str, Any]]] = []
    watch.coalesce(queue, "ADDED", obj("u1", "1"))
    watch.coalesce(queue, "MODIFIED", obj("u1", "2"))
    watch.coalesce(queue, "MODIFIED", obj("u1", "3"))
    assert [(k, o["metadata"]["resourceVersion"]) for k, o in queue] == [("MODIFIED", "3")]


def test_a_deletion_replaces_a_waiting_update_and_is_never_replaced() -> None:
    queue: list[tuple[str, dict[str, Any]]] = []
    watch.coalesce(queue, "MODIFIED", obj("u1", "2"))
    watch.coalesce(queue, "DELETED", obj("u1", "3"))
    watch.coalesce(queue, "ADDED", obj("u2", "4"))
    watch.coalesce(queue, "MODIFIED", obj("u2", "5"))
    assert [(k, o["metadata"]["uid"]) for k, o in queue] == [("DELETED", "u1"), ("MODIFIED", "u2")]


def test_an_object_recreated_under_the_same_name_waits_behind_the_old_one() -> None:
    queue: list[tuple[str, dict[str, Any]]] = []
    watch.coalesce(queue, "MODIFIED", obj("u1", "2"))
    watch.coalesce(queue, "ADDED", obj("u2", "3"))
    assert [o["metadata"]["uid"] for _, o in queue] == ["u1", "u2"]


def test_an_empty_queue_takes_the_event() -> None:
    queue: list[tuple[str, dict[str, Any]]] = []
    watch.coalesce(queue, "DELETED", obj("u1", "9"))
    assert queue == [("DELETED", obj("u1", "9"))]
