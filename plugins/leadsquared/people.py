"""Which lead a person's chat goes to: by phone, else by BSUID in a configured field.

Without a phone number (a WhatsApp username user) a lead can only be found through the
lead field named by `plugins.leadsquared.user_id_field`; without that setting the chat is
held with a reason naming it. A number change can also update the lead's Mobile
(`update_lead_phone`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from bridge import Conversation, Message, is_group
from plugins.leadsquared.client import LeadSquaredClient, LeadSquaredError
from plugins.leadsquared.config import LeadSquaredConfig
from plugins.leadsquared.leads import LeadOwner, create_lead, create_with_owner, find_lead
from plugins.leadsquared.phones import storage_format

logger = logging.getLogger(__name__)

# Held reasons read "<cause> (<fix>)": the status page shows the trailing parentheses as
# the next step (bridge.attention.held_advice), so the fix holds no parentheses itself.
NO_FIELD = ("no phone number: a WhatsApp username user (set plugins.leadsquared.user_id_field "
            "to a lead field, such as mx_WhatsApp_User_ID, to find and create leads by BSUID)")


RECYCLED = ("this number was another WhatsApp user's before, with a different business-scoped "
            "id: it is not matched by phone, so their lead is not used (set "
            "plugins.leadsquared.user_id_field to find leads by BSUID, or create_leads)")


def changed_hands(conversation: Conversation) -> bool:
    """The contact map moved this chat's number from an earlier holder (a recycled number):
    the chat is keyed by its BSUID while a number is known (bridge.buffer.identity)."""
    return bool(conversation.phone) and not conversation.key.startswith("+") \
        and not is_group(conversation.key)


def lookup_phone(conversation: Conversation) -> str | None:
    """The number to find the person's lead by: none when it changed hands (the earlier
    holder's lead has it)."""
    return None if changed_hands(conversation) else phone_of(conversation)


def phone_of(conversation: Conversation) -> str | None:
    """The person's latest phone number (E.164), if the bridge knows one."""
    if conversation.phone:
        return conversation.phone
    return conversation.key if conversation.key.startswith("+") else None


def earlier_phone(conversation: Conversation) -> str | None:
    """The number the chat is keyed by when the person's latest number is another (they
    changed it: the lead may still hold only the old one), else None."""
    key = conversation.key
    return key if key.startswith("+") and key != phone_of(conversation) else None


def user_id_of(conversation: Conversation) -> str | None:
    """The person's BSUID: as the contact map knows it, or the chat's own key."""
    if conversation.user_id:
        return conversation.user_id
    return None if conversation.key.startswith("+") else conversation.key


def display_name(conversation: Conversation, messages: Sequence[Message] = ()) -> str | None:
    """Profile name, else the WhatsApp username (as @name), else none."""
    name = conversation.contact_name or next(
        (m.contact_name for m in messages if m.contact_name), None)
    if name:
        return name
    name = (conversation.username or "").lstrip("@")  # WhatsApp sends it with its `@`
    return f"@{name}" if name else None


def unreachable(config: LeadSquaredConfig, conversation: Conversation) -> str | None:
    """Why no lead can be looked for at all (a held reason), or None."""
    if changed_hands(conversation):
        return None if config.user_id_field or config.create_leads else RECYCLED
    if phone_of(conversation) or (config.user_id_field and user_id_of(conversation)):
        return None
    return NO_FIELD


def not_found(config: LeadSquaredConfig, conversation: Conversation) -> str:
    """The held reason when no lead matches."""
    if changed_hands(conversation) and not config.user_id_field:
        return RECYCLED
    if lookup_phone(conversation):
        return "no lead with this number in LeadSquared (create one, or set create_leads)"
    return (f"no lead with this WhatsApp user id in {config.user_id_field} "
            "(create one, or set create_leads)")


async def resolve(client: LeadSquaredClient, config: LeadSquaredConfig,
                  conversation: Conversation, messages: Sequence[Message],
                  owner: LeadOwner | None = None) -> str | None:
    """The lead id: found by phone, else by BSUID, else created when configured to (a
    number that changed hands is not looked up nor written: see lookup_phone), owned by
    `owner` (the rep of the business number the customer wrote to) when given."""
    phone = lookup_phone(conversation)
    lead = await find_lead(client, phone) if phone else None
    if lead is None and (earlier := earlier_phone(conversation)):
        lead = await find_lead(client, earlier)  # the number before a change
    user_id = user_id_of(conversation)
    if lead is None and config.user_id_field and user_id:
        lead = holding(await client.leads.by_field(config.user_id_field, user_id),
                       config.user_id_field, user_id)
    if lead is not None or not config.create_leads:
        return lead
    if phone:
        return await create_lead(client, phone, display_name(conversation, messages),
                                 config.lead_source, _identity_fields(config, conversation),
                                 owner)
    return await _create_without_phone(client, config, conversation, messages, owner)


def holding(leads: list[dict], field: str, value: str) -> str | None:
    """The first lead whose `field` is `value`: a search whose filter was dropped (a field
    the account does not have) answers other leads, never to be taken for this person."""
    wanted = value.strip().casefold()
    return next((str(lead["ProspectID"]) for lead in leads
                 if str(lead.get(field) or "").strip().casefold() == wanted), None)


def _identity_fields(config: LeadSquaredConfig, conversation: Conversation) -> dict[str, str]:
    fields = {}
    if config.user_id_field and user_id_of(conversation):
        fields[config.user_id_field] = user_id_of(conversation)
    if config.username_field and conversation.username:
        fields[config.username_field] = conversation.username
    return fields


async def _create_without_phone(client: LeadSquaredClient, config: LeadSquaredConfig,
                                conversation: Conversation,
                                messages: Sequence[Message],
                                owner: LeadOwner | None = None) -> str:
    first, _, last = (display_name(conversation, messages) or "WhatsApp").partition(" ")
    attributes = {"FirstName": first, "Source": config.lead_source,
                  **_identity_fields(config, conversation)}
    if last:
        attributes["LastName"] = last
    return await create_with_owner(client, attributes, owner)


def new_numbers(messages: Sequence[Message]) -> list[str]:
    """New numbers from user_changed_number system messages, oldest first."""
    found = []
    for message in messages:
        system = message.extra.get("system") if message.kind == "system" else None
        if isinstance(system, dict) and system.get("type") == "user_changed_number":
            number = message.extra.get("new_number")
            if number:
                found.append(number)
    return found


async def follow_number_change(client: LeadSquaredClient, config: LeadSquaredConfig,
                               lead: str, messages: Sequence[Message]) -> None:
    """With update_lead_phone, write the latest new number to the lead's Mobile."""
    numbers = new_numbers(messages) if config.update_lead_phone else []
    if not numbers:
        return
    try:
        stored = storage_format(numbers[-1])
    except ValueError:
        logger.warning("a number change named a value that is no phone number; Mobile kept")
        return
    await client.leads.update(lead, {"Mobile": stored})
    logger.info("lead %s: Mobile updated after a WhatsApp number change", lead)


__all__ = ["LeadSquaredError", "display_name", "earlier_phone", "follow_number_change",
           "not_found",
           "phone_of", "resolve", "unreachable"]
