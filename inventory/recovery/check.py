"""``inventory check``: compare Redis and Postgres for every slot, and the invariant.

For every tag: each slot's counts in Redis must satisfy
``remaining + held + booked + waiting == capacity`` with nothing negative (always); and,
once the persister has caught up with the tag (Postgres's last seq equals Redis's),
Redis's capacity, held and booked counts must equal the Postgres projection (slot
capacities, holds held and booked) and every booking Postgres has must be booked in
Redis. A tag still catching up is reported as ``lagging``, not as drift, with why:

- Redis's seq is ahead of Postgres's (events not yet written);
- the tag's outbox stream has entries delivered to a persister and not acknowledged
  (XPENDING): a consumer that died mid-batch leaves them there until another one claims
  them, and until then Postgres may miss them even when its highest seq matches;
- Postgres's events of the tag have a gap (fewer rows than their span of seqs): an
  event that never arrived, or one in ``dead_letters``.

Lagging tags are not compared (their counts would show drift that is only delay), and
they make ``inventory check`` exit non-zero: nothing has verified them yet.

Postgres is checked on its own too, for every tag, fenced and lagging ones included: a
slot whose open holds and bookings there outnumber its capacity is ``oversold``, an
invariant violation (Redis may have been restarted without its data and the tag
fenced since: the fence stops further sales, it does not undo one). A fenced tag cannot
be compared with Redis until it is rebuilt: it is listed in ``fenced`` and fails the
check.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import redis.exceptions

from inventory.record.persister import GROUP
from inventory.record.pool import acquire
from inventory.record.queries import QUERIES
from inventory.store import keys
from inventory.store.slot_store import SlotStore, counts_of_slots_hash


@dataclass
class Drift:
    """One disagreement."""

    tag: str
    slot: str
    kind: str
    redis: Any
    postgres: Any


@dataclass
class CheckReport:
    """The outcome of one check."""

    tags: int = 0
    slots: int = 0
    lagging: list[str] = field(default_factory=list)
    #: Why each lagging tag is lagging.
    lag_reasons: dict[str, str] = field(default_factory=dict)
    fenced: list[str] = field(default_factory=list)
    violations: list[Drift] = field(default_factory=list)
    drift: list[Drift] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No invariant violation, no drift among the tags compared, no fenced tag."""
        return not self.violations and not self.drift and not self.fenced

    @property
    def settled(self) -> bool:
        """``ok``, and every tag was compared (none lagging)."""
        return self.ok and not self.lagging

    def lag(self, tag: str, reason: str) -> None:
        """Report ``tag`` as lagging because of ``reason``."""
        self.lagging.append(tag)
        self.lag_reasons[tag] = reason

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "settled": self.settled,
            "tags": self.tags,
            "slots": self.slots,
            "lagging": self.lagging,
            "lag_reasons": self.lag_reasons,
            "fenced": self.fenced,
            "violations": [d.__dict__ for d in self.violations],
            "drift": [d.__dict__ for d in self.drift],
        }


async def check_tag(store: SlotStore, pool: Any, tag: str, report: CheckReport) -> None:
    """Check one tag into ``report``."""
    tk = keys.tag_keys(tag)
    raw_slots = await store.client.hgetall(tk.slots)
    meta = await store.client.hmget(tk.meta, ["seq", "fenced"])
    redis_seq, fenced = int(meta[0] or 0), meta[1] == "1"
    counts = counts_of_slots_hash(raw_slots)
    report.tags += 1
    report.slots += len(counts)
    for slot, slot_counts in counts.items():
        if not slot_counts.conserved:
            report.violations.append(
                Drift(tag, slot, "conservation", dataclasses.asdict(slot_counts), None)
            )
    department_id, day = tag.split(":")
    visit_date = date(int(day[:4]), int(day[4:6]), int(day[6:]))
    async with acquire(pool, timeout_s=10.0) as connection:
        seq_row = await connection.fetchrow(QUERIES["get_tag_sequence"], tag)
        span = await connection.fetchrow(QUERIES["get_tag_event_span"], tag)
        slots = await connection.fetch(QUERIES["list_tag_slots"], department_id, visit_date)
        holds = await connection.fetch(QUERIES["list_tag_open_holds"], tag)
    held: dict[str, int] = {}
    booked: dict[str, int] = {}
    for hold in holds:
        bucket = held if hold["state"] == "held" else booked
        bucket[hold["slot_id"]] = bucket.get(hold["slot_id"], 0) + 1
    for slot in slots:
        taken = held.get(slot["id"], 0) + booked.get(slot["id"], 0)
        if taken > int(slot["capacity"]):
            report.violations.append(
                Drift(
                    tag,
                    slot["id"],
                    "oversold",
                    None,
                    {
                        "capacity": int(slot["capacity"]),
                        "held": held.get(slot["id"], 0),
                        "booked": booked.get(slot["id"], 0),
                    },
                )
            )
    if fenced:
        report.fenced.append(tag)
        return
    postgres_seq = int(seq_row["last_seq"]) if seq_row else 0
    if postgres_seq != redis_seq:
        report.lag(tag, f"seq {redis_seq} in Redis, {postgres_seq} in Postgres")
        return
    pending = await _pending_entries(store, tk.outbox)
    if pending:
        report.lag(tag, f"{pending} outbox entries delivered and not acknowledged")
        return
    if span is not None and span["events"]:
        missing = int(span["last_seq"]) - int(span["first_seq"]) + 1 - int(span["events"])
        if missing:
            report.lag(
                tag,
                f"{missing} events missing in Postgres between seq {span['first_seq']} "
                f"and {span['last_seq']} (on their way, or in dead_letters)",
            )
            return
    for hold in holds:
        record = await store.get_hold(hold["hold_id"])
        if record is None or record.state.value != hold["state"]:
            report.drift.append(
                Drift(
                    tag,
                    hold["slot_id"],
                    f"hold {hold['hold_id']}",
                    record.state.value if record else None,
                    hold["state"],
                )
            )
    for slot in slots:
        found = counts.get(slot["id"])
        if found is None:
            report.drift.append(Drift(tag, slot["id"], "slot missing in redis", None, "present"))
            continue
        for kind, redis_value, pg_value in (
            ("capacity", found.capacity, int(slot["capacity"])),
            ("held", found.held, held.get(slot["id"], 0)),
            ("booked", found.booked, booked.get(slot["id"], 0)),
        ):
            if redis_value != pg_value:
                report.drift.append(Drift(tag, slot["id"], kind, redis_value, pg_value))


async def _pending_entries(store: SlotStore, stream: str) -> int:
    """Entries of ``stream`` delivered to the persisters' group and not acknowledged
    (0 when the stream or the group does not exist)."""
    try:
        summary = await store.client.xpending(stream, GROUP)
    except redis.exceptions.ResponseError as error:
        if "NOGROUP" in str(error):
            return 0
        raise
    return int(summary["pending"]) if summary else 0


async def check(store: SlotStore, pool: Any) -> CheckReport:
    """Check every tag known to Redis or Postgres."""
    tags = {str(t) for t in await store.client.smembers(keys.TAG_REGISTRY_KEY)}
    async with acquire(pool, timeout_s=10.0) as connection:
        rows = await connection.fetch(QUERIES["list_all_tag_sequences"])
    tags |= {str(r["tag"]) for r in rows if not str(r["tag"]).startswith("p:")}
    report = CheckReport()
    for tag in sorted(tags):
        await check_tag(store, pool, tag, report)
    return report
