"""The Sparkplug B edge node, sans I/O: devices going offline and coming back (DDEATH, DBIRTH), a
device offline at start, and the state-only records of the gateway's offline set."""

from __future__ import annotations

from citynerve.gateway.api import Event, EventState, Quality, Severity
from citynerve.gateway.uplink.sparkplug import StoredRecord, Verb
from tests.uplink.test_sparkplug_node import T0, born, decode, reading, rec


def test_device_offline_event_sends_alarm_then_ddeath_and_data_rebirths() -> None:
    n = born()
    offline = Event("meter-1", "device_offline", EventState.RAISED, Severity.MAJOR, (T0 + 100) / 1000, "bus")
    out = n.encode([rec(1, offline)], T0 + 200)
    assert [m.verb for m in out] == [Verb.DDATA, Verb.DDEATH]
    ddeath = decode(out[1].payload)
    assert ddeath.seq == 3 and not ddeath.metrics and not n.is_online("meter-1")
    assert n.device_offline("meter-1", T0) == []  # already dead
    # stale data of a dead device is not sent (DDEATH said so)
    assert n.encode([rec(2, reading("voltage", 1.0, quality=Quality.STALE))], T0 + 300) == []
    assert n.skipped == 1
    # a good reading while its device_offline alarm is active (older data): born for it, then dead again
    out = n.encode([rec(3, reading("voltage", 1.0))], T0 + 400)
    assert [m.verb for m in out] == [Verb.DBIRTH, Verb.DDATA, Verb.DDEATH]
    # the clear births it (its alarm metrics need it), and it stays alive with its data
    back = Event("meter-1", "device_offline", EventState.CLEARED, Severity.MAJOR, (T0 + 450) / 1000, "bus")
    out = n.encode([rec(4, back), rec(5, reading("voltage", 2.0))], T0 + 460)
    assert [m.verb for m in out] == [Verb.DBIRTH, Verb.DDATA, Verb.DDATA] and n.is_online("meter-1")
    # births after a rebirth leave dead devices out
    n.device_offline("meter-1", T0)
    assert [m.verb for m in n.birth(T0 + 500)] == [Verb.NBIRTH]
    assert [m.verb for m in n.device_online("meter-1", T0 + 600)] == [Verb.DBIRTH]


def test_a_device_offline_at_start_is_born_by_its_clear_only() -> None:
    """After a restart the bus owner starts a device whose device_offline alarm is still active
    offline and raises nothing new: the node starts it dead too (no DBIRTH with null values)."""
    n = born(offline=["meter-1"])
    assert not n.is_online("meter-1")
    assert [m.verb for m in n.birth(T0 + 10)] == [Verb.NBIRTH]
    # data from before its death (a backlog): born for it, dead again after it
    out = n.encode([rec(1, reading("voltage", 1.0)), rec(2, reading("temp", 3))], T0 + 20)
    assert [m.verb for m in out] == [Verb.DBIRTH, Verb.DDATA, Verb.DDEATH]
    back = Event("meter-1", "device_offline", EventState.CLEARED, Severity.MAJOR, (T0 + 30) / 1000, "bus")
    assert [m.verb for m in n.encode([rec(3, back)], T0 + 40)] == [Verb.DBIRTH, Verb.DDATA]
    assert n.is_online("meter-1")


def test_a_state_only_offline_event_gives_the_death_or_birth_alone() -> None:
    """The gateway's offline set for a destination whose filter leaves device_offline out: no
    alarm metrics, only DDEATH and DBIRTH; a good reading in between does not leave it alive."""
    n = born()

    def state(s: EventState) -> StoredRecord:
        event = Event("meter-1", "device_offline", s, Severity.MAJOR, (T0 + 50) / 1000, "bus.offline")
        return StoredRecord("ep-1", 0, event, state_only=True)

    out = n.encode([rec(1, reading("voltage", 1.0)), state(EventState.RAISED)], T0 + 100)
    assert [m.verb for m in out] == [Verb.DDATA, Verb.DDEATH]
    assert not decode(out[1].payload).metrics and not n.is_online("meter-1")
    assert n.encode([state(EventState.RAISED)], T0 + 110) == []  # already dead
    out = n.encode([rec(2, reading("voltage", 2.0))], T0 + 120)
    assert [m.verb for m in out] == [Verb.DBIRTH, Verb.DDATA, Verb.DDEATH]
    out = n.encode([state(EventState.CLEARED), rec(3, reading("voltage", 3.0))], T0 + 130)
    assert [m.verb for m in out] == [Verb.DBIRTH, Verb.DDATA] and n.is_online("meter-1")
    assert n.encode([state(EventState.CLEARED)], T0 + 140) == []  # already alive
    # the state of a device the node does not have is ignored
    other = Event("meter-9", "device_offline", EventState.RAISED, Severity.MAJOR, T0 / 1000, "bus.offline")
    assert n.encode([StoredRecord("ep-1", 0, other, state_only=True)], T0 + 150) == []
    assert n.skipped == 0 and "meter-9" not in n.device_ids()  # no outbox row: nothing lost
