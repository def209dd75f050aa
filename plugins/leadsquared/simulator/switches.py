"""Switches for what the LeadSquared reference leaves unknown: one per open question.

Each switch names the plausible readings; the first is the default and the strictest (the
one that hides the fewest client bugs). The sink's tests run against every setting.
docs/leadsquared-simulator.md lists each switch with its source.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

SWITCHES: dict[str, tuple[str, ...]] = {
    # §7.6: is a stored "+91-98..." found by a bare "98..."? exact: no (stored value less
    # spaces and hyphens must equal the query); normalised: digits compared, with or
    # without the country code.
    "phone_match": ("exact", "normalised"),
    # §8 [LIVE] says opportunityType is required; [DOC:get-opportunities-by-lead-id] says
    # optional.
    "opportunity_type": ("required", "optional"),
    # Where Retrieve puts custom fields: live = only in ActivityFields (§8 [LIVE]);
    # both = ActivityFields and Data; docs = only in Data, no ActivityFields (§2c).
    "retrieve_shape": ("live", "both", "docs"),
    # CreateType DataType: string = only String, the one type every doc example shows
    # (§2d); any = also Number, Decimal, Date, DateTime, Boolean (GUESS).
    "field_types": ("string", "any"),
    # A body that is not JSON: 500 with a non-MX .NET type (§8 [LIVE] gotcha 15) or
    # 400 ([DOC:error-handling], §3).
    "bad_json": ("500", "400"),
    # Leads.GetByQuickSearch: literal = the key is a substring of a field as stored
    # (GUESS); digits = the key's digits are found in a phone field's digits.
    "quick_search": ("literal", "digits"),
}


@dataclass
class Switches:
    """The current reading of each open question; see SWITCHES for the choices."""

    phone_match: str = "exact"
    opportunity_type: str = "required"
    retrieve_shape: str = "live"
    field_types: str = "string"
    bad_json: str = "500"
    quick_search: str = "literal"


SWITCH_NAMES = tuple(f.name for f in fields(Switches))


def check_switch(name: str, value: Any) -> str:
    """The value to store for a switch, or ValueError naming the choices."""
    value = str(value)
    if value not in SWITCHES[name]:
        raise ValueError(f"{name} {value!r}: use one of {', '.join(SWITCHES[name])}")
    return value


def every_setting() -> list[dict[str, str]]:
    """The default, each switch moved off it alone, then every switch at its last choice."""
    settings = [{}]
    for name, choices in SWITCHES.items():
        settings.extend({name: choice} for choice in choices[1:])
    settings.append({name: choices[-1] for name, choices in SWITCHES.items()})  # all loose
    return settings
