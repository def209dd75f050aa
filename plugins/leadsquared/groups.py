"""Group chats in LeadSquared: skipped (the default), or each message on its sender's lead.

A group is never posted as one person's private chat. With `groups: participants` a
group batch is split by sender; each sender's messages go to that sender's lead through
the normal path, every line and the activity header naming the group.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

from bridge import Batch, Conversation, Direction, Outcome, SinkSettings, is_group
from plugins.leadsquared.people import display_name

SKIPPED = ("group chat: not posted (plugins.leadsquared.groups is skip; set it to "
           "participants to post each message on its sender's lead)")
FROM_BUSINESS = "sent by the business to a group: no participant's lead to post it on"


def contact_label(conversation: Conversation) -> str:
    """The customer's name in lines and headers; a group member's names the group too."""
    name = display_name(conversation) or "customer"
    if conversation.group_id and not is_group(conversation.key):
        return f"{name} (in WhatsApp group {conversation.group_id})"
    return name


async def deliver_group(settings: SinkSettings, batch: Batch,
                        deliver: Callable[[Batch], Awaitable[list[Outcome]]]) -> list[Outcome]:
    """Outcomes of a group batch under the `groups` setting; each sender's messages go
    through `deliver` as a batch of their own."""
    if settings.groups != "participants":
        return [Outcome.skipped(SKIPPED)] * len(batch.messages)
    outcomes: dict[int, Outcome] = {}
    senders: dict[str, list[int]] = defaultdict(list)
    for index, message in enumerate(batch.messages):
        person = message.extra.get("sender_person") or {}
        key = person.get("key") or message.extra.get("sender")
        if message.direction == Direction.OUT or not key:
            outcomes[index] = Outcome.skipped(FROM_BUSINESS)
        else:
            senders[key].append(index)
    group = batch.conversation.contact_name or batch.conversation.group_id \
        or batch.conversation.key.split(":", 1)[1]
    for key, indexes in senders.items():
        sub = _sender_batch(batch, key, group, [batch.messages[i] for i in indexes])
        for index, outcome in zip(indexes, await deliver(sub), strict=True):
            outcomes[index] = outcome
    return [outcomes[i] for i in range(len(batch.messages))]


def _sender_batch(batch: Batch, key: str, group: str, messages: list[Any]) -> Batch:
    """One sender's messages as a batch of their own; its keys extend the group batch's,
    so a retry finds what was posted. The ledger and the target failures are the group
    batch's (shared), so what the sender's batch posts or fails is committed with the
    group batch's outcomes."""
    person = messages[0].extra.get("sender_person") or {}
    conversation = Conversation(
        key=key, contact_name=person.get("name") or messages[0].contact_name,
        phone=person.get("phone") or (key if key.startswith("+") else None),
        user_id=person.get("user_id") or (None if key.startswith("+") else key),
        username=person.get("username"), record_id=person.get("record_id"), group_id=group,
        account=batch.conversation.account)
    suffix = hashlib.sha256(key.encode()).hexdigest()[:8]
    return Batch(key=f"{batch.key}~{suffix}", sink=batch.sink, conversation=conversation,
                 messages=messages, attempt=batch.attempt, uncertain=batch.uncertain,
                 ledger=batch.ledger, record_id=conversation.record_id,
                 new_ledger=batch.new_ledger, targets=batch.targets,
                 new_targets=batch.new_targets, cleared=batch.cleared,
                 outage_tries=batch.outage_tries,
                 failing_since=batch.failing_since, account=batch.account)
