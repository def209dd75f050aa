"""History older than a sink's backfill window: stored, not posted until asked (issue 26).

A history message (recovered, not live: a coexistence history sync, an imported export)
is queued as backfill. When it reached the buffer more than the sink's `backfill_days`
after it was sent, a claim of the drain marks it skipped for that sink, with a reason the
status page shows, before any batch takes it. `bridge backfill --days N` re-opens the ones
it covers (store._BACKFILL), and they stay open: a message stored before that backfill
began and sent inside its window is never held again.
"""

from __future__ import annotations

import math

import sqlalchemy as sa

from bridge.buffer.compiler import P, Query, indexed, starts_with
from bridge.buffer.connectors import Connector
from bridge.buffer.tables import REAL, deliveries, messages, sink_state

HISTORY_HELD = "history older than the sink's backfill_days"  # every such reason starts so
# a re-opened one waits with this reason: a later, shorter backfill never holds it again
REOPENED = "history a backfill re-opened"
FAR = 1e18  # seconds: later than any time (no backfill recorded yet)

d, m, ss = deliveries.c, messages.c, sink_state.c
_pending = indexed(deliveries, "deliveries_pending", "h")
_since = sa.select(ss.backfill_since).where(ss.sink == P("sink")).scalar_subquery()
_asked = sa.select(ss.backfill_started_at).where(ss.sink == P("sink")).scalar_subquery()
_old = (sa.select(_pending.c.message_id)
        .join_from(_pending, messages, m.id == _pending.c.message_id)
        .where(_pending.c.sink == P("sink"), _pending.c.state == "pending",
               _pending.c.batch_id.is_(None), _pending.c.backfill == 1,
               sa.func.coalesce(_pending.c.reason, "") != REOPENED,
               m.sent_at < m.stored_at - P("window", type_=REAL),
               # not covered by the last backfill asked for (stored before it, sent inside)
               sa.or_(m.sent_at < sa.func.coalesce(_since, FAR),
                      m.stored_at > sa.func.coalesce(_asked, -1.0))))
# backfill=0: a held message is not part of a backfill's progress until one covers it
HOLD = Query(sa.update(deliveries).values(state="skipped", reason=P("reason"), done_at=P("now"),
                                          backfill=0)
             .where(d.sink == P("sink"), d.state == "pending", d.message_id.in_(_old)),
             "hold history older than the backfill window")
_HELD = starts_with(d.reason, HISTORY_HELD)
REOPEN = Query(sa.update(deliveries).values(state="pending", reason=REOPENED, done_at=None,
                                            backfill=1, batch_id=None)
               .where(d.sink == P("sink"), d.state == "skipped", _HELD,
                      d.message_id.in_(sa.select(m.id).where(m.sent_at >= P("since")))),
               "backfill: history it covers")


def reason(sink: str, days: float) -> str:
    """Why a history message waits, and what posts it."""
    return (f"{HISTORY_HELD} ({days:g} days): stored, not posted; `bridge backfill --sink "
            f"{sink} --days N` with N reaching back to it posts it")


def waiting_note(sink: str, count: int, oldest: float | None, now: float) -> str | None:
    """Why a chat with held history shows nothing synced nor pending, and the command
    that syncs it (its oldest held message within the days it names); None without any."""
    if not count or oldest is None:
        return None
    days = max(1, math.ceil((now - oldest) / 86400.0))
    what = "message is" if count == 1 else "messages are"
    return (f"{count} {what} history older than the backfill window: stored, not synced; "
            f"`bridge backfill --sink {sink} --days {days}` syncs "
            f"{'it' if count == 1 else 'them'}")


async def hold(db: Connector, sink: str, days: float, now: float) -> int:
    """Mark skipped the sink's waiting history sent more than `days` before it was stored."""
    return await db.run(HOLD, sink=sink, window=days * 86400.0, now=now,
                        reason=reason(sink, days))
