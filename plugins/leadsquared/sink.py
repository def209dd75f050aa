"""The LeadSquared sink: a chat window becomes an activity on the lead and its open deals.

The sink is the core's contract (start, deliver, close, what the status page reads); a
batch's way in is delivery.deliver_batch: resolve → targets → post → attach. The sink
never imports the simulator: `host: simulator` is the plugin's wiring, which hands the
sink an `Endpoint` that runs it (plugins/leadsquared/__init__.py).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from bridge import Batch, Metrics, Outcome, SharedBuffer
from plugins.leadsquared.account import Account, Endpoint, base_url, client_factory, open_account
from plugins.leadsquared.attachments import Attacher, uploads_end_within
from plugins.leadsquared.bulk import BULK_MAX, BulkPoster, OpportunityBulk
from plugins.leadsquared.client import LeadSquaredClient
from plugins.leadsquared.config import SIMULATOR, LeadSquaredConfig, bulk_rate
from plugins.leadsquared.delivery import Steps, deliver_batch
from plugins.leadsquared.directory import LeadDirectory
from plugins.leadsquared.errors import LeadSquaredError
from plugins.leadsquared.keys import KeyCheck
from plugins.leadsquared.opportunities import Opportunities
from plugins.leadsquared.outcomes import WRITE_SETTLE
from plugins.leadsquared.owners import Owners, shown_phone
from plugins.leadsquared.post import Poster
from plugins.leadsquared.ratelimit import RateLimiter, parse_rate
from plugins.leadsquared.resolve import Resolver
from plugins.leadsquared.targets import Planner

logger = logging.getLogger(__name__)
# start_timeout: a safety net only. Each call of a start ends within its timeout and
# retries, so a start ends by itself; but how many calls it makes grows with the account
# (owners: auto reads each user, the lead directory pages through every lead, all within
# the rate budget), so the net is wide: a cut-off start would begin all over again
START_BOUND = 3600.0


class LeadSquaredSink:
    """Posts each conversation window as an activity of one dedicated type."""

    name = "leadsquared"

    def __init__(self, config: LeadSquaredConfig, metrics: Metrics | None = None,
                 endpoint: Endpoint | None = None) -> None:
        self.settings = config
        self.metrics = metrics
        self.endpoint = endpoint  # the bundled simulator for host: simulator, else None
        calls, per = parse_rate(config.rate_limit)
        self.limiter = RateLimiter(calls, per)
        self.bulk_limiter = RateLimiter.from_text(bulk_rate(config))
        self.bulk = BulkPoster(lambda: self.client, self.bulk_limiter) if config.bulk else None
        # deliveries the core may run at once: bulk calls gather rows across them
        self.concurrency = BULK_MAX if config.bulk else 1
        self.client: LeadSquaredClient | None = None
        self.account: Account | None = None
        self.steps: Steps | None = None
        self.simulated = "LeadSquared" if config.host == SIMULATOR else None  # Sink contract
        self.directory: LeadDirectory | None = None
        self.owners: Owners | None = None
        self._rows: Any = None  # the buffer's directory rows for this sink (use_buffer)
        self._record_landed: Any = None  # the buffer's record_landed (use_buffer)
        self._record_attempt: Any = None  # the buffer's record_attempt (use_buffer)
        self._asked_at = 0.0  # when a person last asked for a sync (hurry)
        self._client = client_factory(config, self.limiter, self.bulk_limiter, metrics,
                                      self.name)

    @property
    def write_settle(self) -> float:
        """Seconds a write cut off in flight may still take to commit (the core waits this
        long before the retry that looks for its key): as for a call that timed out."""
        return WRITE_SETTLE * self.settings.timeout

    @property
    def start_timeout(self) -> float:
        """Longest start() may take before the core cuts it off and tries again (an hour,
        at least deliver_timeout): each of its calls is bounded by `timeout` already, and
        start_note() names the host while they fail."""
        return max(self.settings.deliver_timeout, START_BOUND)

    def start_note(self) -> str | None:
        """While start() runs: the host and the call that keeps failing or is unanswered
        past the timeout (the status page's reason), else None."""
        client = self.client
        if client is None:
            return None
        trouble = client.waiting() or client.trouble
        return f"LeadSquared at {client.host}: {trouble}" if trouble else None

    @property
    def backfill_concurrency(self) -> int:
        """Backfill batches at once: all a bulk call holds when leads come from the
        directory; few when each needs remote lookups, so the ordinary budget's queue
        stays short and a live message is not stuck behind it."""
        if self.bulk is None:
            return 1
        return BULK_MAX if self.directory is not None and self.directory.enabled else 4

    def use_buffer(self, buffer: Any) -> None:
        """The buffer that holds the lead directory and the unknown numbers (issue 15), and
        on PostgreSQL the rate budgets every bridge process shares (issue 18)."""
        self._rows = buffer.directory(self.name)
        self._record_landed = buffer.record_landed  # the core's Deliveries contract
        self._record_attempt = buffer.record_attempt
        if isinstance(buffer, SharedBuffer):  # PostgreSQL: one budget for every process
            self.limiter.share(buffer.shared_budget(self.name, "ordinary"))
            self.bulk_limiter.share(buffer.shared_budget(self.name, "bulk"))

    async def start(self) -> None:
        """Find the host, the account's activity type (created if missing) and owner, fill
        the lead directory; set up the delivery steps. Once per run. A failure names the
        host (the status page shows it as the reason)."""
        await self.close()  # a failed earlier start may have left a client or endpoint
        base = await base_url(self.settings, self.endpoint, self._client)
        self.client = self._client(base)
        try:
            await self._start(base)
        except LeadSquaredError as exc:
            raise LeadSquaredError(exc.kind, f"LeadSquared at {self.client.host}: "
                                   f"{exc.message}", exception_type=exc.exception_type,
                                   status=exc.status) from exc

    async def _start(self, base: str) -> None:
        assert self.client is not None
        self.account = account = await open_account(self.client, self.settings, base)
        if self._rows is not None and self.settings.lead_directory != "off":
            self.directory = LeadDirectory(self.client, self._rows,
                                           mode=self.settings.lead_directory,
                                           limit=self.settings.lead_directory_max,
                                           refresh_every=self.settings.lead_directory_refresh)
            self.directory.asked_at = lambda: self._asked_at
            await self.directory.start()
        keys = KeyCheck(self.client, account.event)
        self.owners = Owners(self.client, self.settings)
        await self.owners.start()
        if (unread := self.owners.unread) is not None:  # auto, without every rep's numbers:
            raise LeadSquaredError(unread.kind, "owners: auto could not read the account's "
                                   f"users ({unread.message}); the sink starts again later "
                                   "rather than file their chats under owner_fallback")
        people = Resolver(self.client, self.settings, self._rows, self.directory,
                          asked_at=lambda: self._asked_at, owners=self.owners)
        opportunity_bulk = OpportunityBulk(lambda: self.client) if self.bulk else None
        self.steps = Steps(
            self.settings, people,
            Planner(self.settings, keys, Opportunities(self.client, self.settings),
                    account.tz, account.allow_attachments, self.owners, self._keep),
            Poster(self.client, self.settings, account.event, keys, people.forget_if_gone,
                   self.bulk, opportunity_bulk, account.owner_email, account.business_field,
                   self.owners.gone if self.owners.enabled else None),
            Attacher(self.client, account.files_base, account.allow_attachments,
                     self.settings.max_attempts, self._landed, self._attempt))
        logger.info("LeadSquared sink ready: activity event %s on %s", account.event, base)

    async def hurry(self) -> None:
        """A person asked for a sync (sync now, a requeue, a backfill): the reps (owners)
        are read again now, before the drain; a number that matched no lead is searched
        again, not after unknown_recheck, and the lead directory is refreshed first (the
        lead may just have been created). Rate-limit waits and a write's settle wait
        stay."""
        self._asked_at = time.time()
        if self.owners is not None:
            await self.owners.refresh()

    async def _landed(self, key: str, attachment: str) -> None:
        """An attach landed: in the buffer's ledger now (when the core gave a buffer)."""
        if self._record_landed is not None:
            await self._record_landed(self.name, key, attachment)

    async def _keep(self, key: str, note: str) -> None:
        """A note of the sink's own for a batch (its first try's reps), in the buffer's
        ledger now, before anything of the batch is posted."""
        if self._record_landed is not None:
            await self._record_landed(self.name, key, note)

    async def _attempt(self, batch_key: str, failure: Any) -> None:
        """An attach is about to go out: in the buffer now (when the core gave a buffer)."""
        if self._record_attempt is not None:
            await self._record_attempt(self.name, batch_key, failure)

    async def deliver(self, batch: Batch) -> list[Outcome]:
        """One outcome per message: delivered when every part holding it is posted."""
        if self.steps is None:
            raise RuntimeError("the LeadSquared sink is not started")
        with uploads_end_within(self._upload_time()):
            if self.bulk is None:
                return await deliver_batch(self.steps, batch)
            with self.bulk.delivering():
                return await deliver_batch(self.steps, batch)

    def _upload_time(self) -> float:
        """How long into a delivery its uploads may go on: the core cuts the delivery at
        deliver_timeout, and one call's timeout is kept for the Attachment/Add after the
        upload (half the delivery where the call's timeout is longer than that)."""
        limit = self.settings.deliver_timeout
        return limit - min(self.settings.timeout, limit / 2)

    async def close(self) -> None:
        if self.owners is not None:
            await self.owners.close()
        if self.bulk is not None:
            await self.bulk.close()
        if self.steps is not None and self.steps.poster.opportunity_bulk is not None:
            await self.steps.poster.opportunity_bulk.close()
        self.steps = None
        if self.client is not None:
            await self.client.close()
            self.client = None
        if self.endpoint is not None:
            await self.endpoint.close()

    def record_url(self, record_id: str) -> str | None:
        """The lead's page in the LeadSquared web app (host from UserByAccessKey.Get)."""
        # The reference gives the web-app host but not the page path; LeadDetails?LeadID=
        # is the lead page's address in the web app as users see it. Unconfirmed by the docs.
        app = self.account.app_url if self.account else None
        return f"{app}/LeadManagement/LeadDetails?LeadID={record_id}" if app else None

    def rate_budget(self) -> tuple[int, float]:
        """The CRM's rate limit as (calls, per seconds): the page charts calls against it."""
        return self.limiter.calls, self.limiter.per

    def bulk_rate_budget(self) -> tuple[int, float] | None:
        """The bulk calls' own budget (reference §3), when bulk posts are on."""
        return (self.bulk_limiter.calls, self.bulk_limiter.per) if self.bulk else None

    def describe(self) -> dict[str, Any]:
        """Live state for the status page: both rate limits and how full their windows are,
        and whether the sink runs against the bundled simulator (not a real account)."""
        state, bulk = self.limiter.state, self.bulk_limiter.state
        account, steps = self.account, self.steps
        opportunities = steps.targets.opportunities if steps else None
        return {"simulator": bool(self.simulated),  # the demo sets it on a URL host too
                "rate_limit": self.settings.rate_limit, "calls_in_window": state["in_window"],
                "waiting_calls": state["waiting"],
                "throttled_for_s": round(state["paused_for"], 1),
                "bulk_rate_limit": bulk_rate(self.settings) if self.bulk else "off",
                "bulk_calls_in_window": bulk["in_window"],
                "bulk_throttled_for_s": round(bulk["paused_for"], 1),
                "lead_directory": "on" if self.directory and self.directory.enabled
                else "off",
                "activity_event": account.event if account else None,
                "opportunity_types": opportunities.types if opportunities else None,
                "opportunity_types_from": opportunities.source if opportunities else None,
                "attachments": "allowed" if not account or account.allow_attachments else
                "not allowed by the activity type: media files are held in the bridge",
                "owners": self._owners_line()}

    def _owners_line(self) -> str:
        """Who owns the activities: the reps' numbers, and the fallback for the rest."""
        owners = self.owners
        if owners is None or not owners.enabled:
            return "not set: the API user owns every activity"
        mapped = ", ".join(f"{shown_phone(number)} → {email}"
                           for number, email in owners.mapping.items())
        mode = "auto, " if self.settings.owners == "auto" else ""
        refused = "".join(f"; {shown_phone(number)} → {why}: follows owner_fallback"
                          for number, why in owners.refused.items())
        notes = "".join(f"; {note}" for note in owners.notes  # the rest the read could not map
                        if note.split(" ", 1)[0] not in owners.refused)
        leads = f"; {owners.lead_note}" if owners.lead_note else ""
        return (f"{mode}{mapped or 'no number mapped'}{refused}; other numbers: "
                f"{self.settings.owner_fallback}{notes}{leads}")
