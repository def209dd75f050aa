"""owners / owner_fallback / business_field settings, and how a rep is named (owners.py)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from bridge.config import describe
from plugins.leadsquared.config import LeadSquaredConfig
from plugins.leadsquared.owners import Owners, Rep, user_phones


def config(**settings) -> LeadSquaredConfig:
    return LeadSquaredConfig(access_key="a", secret_key="b", **settings)


def test_owners_keys_are_phone_number_ids_or_e164_numbers_and_auto_is_a_mode():
    loaded = config(owners={"+91 98000 00001": "priya@example.com",
                            "106540352242922": "arjun@example.com"})
    assert loaded.owners == {"+919800000001": "priya@example.com",
                             "106540352242922": "arjun@example.com"}
    assert config(owners="auto").owners == "auto" and config().owners is None
    assert config().owner_fallback == "lead_owner" and config().business_field == "mx_Custom_6"


@pytest.mark.parametrize(("settings", "expected"), [
    ({"owners": {"+91 98": "p@x.com"}},
     "plugins.leadsquared.owners: +91 98: not a business number: use its phone_number_id"),
    ({"owners": {"+919800000001": "priya"}},
     "plugins.leadsquared.owners: +919800000001: 'priya' is not an email address"),
    ({"owners": ["priya@example.com"]},
     "plugins.leadsquared.owners: ['priya@example.com'] is not valid: use auto, or a map"),
    ({"owner_fallback": "boss"},
     "plugins.leadsquared.owner_fallback: 'boss' is not valid"),
    ({"business_field": "Custom_6"}, "plugins.leadsquared.business_field: 'Custom_6'"),
])
def test_owner_config_errors_name_the_key_path_and_the_fix(settings, expected):
    with pytest.raises(ValidationError) as caught:
        config(**settings)
    assert expected in describe(caught.value, LeadSquaredConfig, "plugins.leadsquared")


def test_a_rep_is_named_with_the_number_and_an_unmapped_number_by_the_business_name():
    assert Rep("p@x.com", "Priya Rao", "+919800000001").label("Business") == \
        "Priya Rao (+919800000001)"
    assert Rep(None, None, "+919800000003").label("Business") == "Business (+919800000003)"
    assert Rep(None, None, None).label("Acme") == "Acme"


def test_user_phone_fields_in_any_form_become_e164():
    user = {"AssociatedPhoneNumbers": "+91-9800000001, +91 98000 00002",
            "PhoneMobile": "0091 9800000003", "PhoneMain": "", "PhoneOthers": None}
    assert user_phones(user) == ["+919800000001", "+919800000002", "+919800000003"]
    # kept without the country code: matched by its national digits, after E.164 forms
    assert user_phones({"PhoneMobile": "098000 00004", "PhoneMain": "12"}) == [
        "nsn:9800000004"]


def test_a_mapped_number_is_found_by_any_variant_or_its_phone_number_id():
    owners = Owners(None, config(owners={"+5511987654321": "bia@example.com",  # type: ignore
                                         "106540352242922": "arjun@example.com"}))
    owners.mapping = dict(owners.settings.owners)
    assert owners.mapped("+551187654321", None) == "bia@example.com"  # no ninth digit
    assert owners.mapped(None, "106540352242922") == "arjun@example.com"
    assert owners.mapped("+919800000009", "1") is None


def test_a_display_number_written_unquoted_in_yaml_still_owns_its_chats(tmp_path):
    """YAML reads `+919800000001:` unquoted as the integer 919800000001 (and a
    display number may be written without its '+'): it must still match the
    business number the webhook names, not pass as a phone_number_id nobody uses."""
    from bridge.config import read_yaml

    path = tmp_path / "bridge.yaml"
    path.write_text("owners:\n  +919800000001: priya@example.com\n"
                    "  \"5511987654321\": bia@example.com\n", encoding="utf-8")
    owners = Owners(None, config(**read_yaml(path)))  # type: ignore[arg-type]
    owners.mapping = dict(owners.settings.owners)
    assert owners.mapped("+919800000001", "106540352242922") == "priya@example.com"
    assert owners.mapped("+551187654321", None) == "bia@example.com"  # its twin too


@pytest.mark.parametrize("owners", [
    {"+91 98000 00001": "priya@example.com", "+919800000001": "arjun@example.com"},
    {"+5215512345678": "priya@example.com", "+525512345678": "arjun@example.com"},
    {919800000001: "priya@example.com", "+919800000001": "arjun@example.com"},
])
def test_one_number_given_twice_to_two_users_is_refused_naming_both_keys(owners):
    """Two forms of one number (spaces, Mexico's 1, a YAML integer) mapped to two
    users: one would silently win; the error names both keys."""
    with pytest.raises(ValidationError) as caught:
        config(owners=owners)
    said = describe(caught.value, LeadSquaredConfig, "plugins.leadsquared")
    first, second = (str(k) for k in owners)
    assert "plugins.leadsquared.owners" in said and first in said and second in said
    assert "same number" in said


@pytest.mark.parametrize("key", ["00919800000001", "0091 98000 00001", "0091-98000-00001"])
def test_a_display_number_with_the_international_prefix_00_owns_its_chats(key):
    """`0091…` is how many reps write their number. Was: digits, so taken as a
    phone_number_id that no webhook names; the rep's chats went to owner_fallback (the
    lead's owner, or the API user) while `bridge leadsquared check` listed the mapping as
    fine. Found by an adversary's run: Priya's chat was owned by the API user."""
    owners = Owners(None, config(owners={key: "priya@example.com"}))  # type: ignore[arg-type]
    owners.mapping = dict(owners.settings.owners)
    assert owners.mapped("+919800000001", "106540352242922") == "priya@example.com"


def test_a_number_with_the_international_prefix_and_its_e164_form_to_two_users_is_refused():
    with pytest.raises(ValidationError) as caught:
        config(owners={"00919800000001": "priya@example.com",
                       "+919800000001": "arjun@example.com"})
    assert "same number" in describe(caught.value, LeadSquaredConfig, "plugins.leadsquared")


def test_a_national_number_with_a_trunk_0_is_refused_not_taken_for_a_phone_number_id():
    """`098…` can be no phone_number_id (Graph ids have no leading 0), and it names no
    country: refused naming the fix, never silently matched to nothing."""
    with pytest.raises(ValidationError) as caught:
        config(owners={"09800000001": "priya@example.com"})
    assert "plugins.leadsquared.owners: 09800000001: a number with a trunk 0" in describe(
        caught.value, LeadSquaredConfig, "plugins.leadsquared")


def test_an_unquoted_00_number_of_octal_digits_in_yaml_still_owns_its_chats(tmp_path):
    """YAML 1.1 (PyYAML) reads an unquoted `0061234567012:` (+61 2 3456 7012, digits 0-7
    only) as the octal integer 6617755146: the key became '6617755146', taken for a
    phone_number_id no webhook names, and the rep's chats silently went to owner_fallback
    (`0091…` numbers hold a 9, so they stayed text). A number written with leading zeros is
    now read as written. (adv45)"""
    from bridge.config import read_yaml

    path = tmp_path / "bridge.yaml"
    path.write_text("owners:\n  0061234567012: liam@example.com\n", encoding="utf-8")
    owners = Owners(None, config(**read_yaml(path)))  # type: ignore[arg-type]
    owners.mapping = dict(owners.settings.owners)
    assert owners.mapped("+61234567012", "106540352242922") == "liam@example.com"


def test_an_unquoted_trunk_0_number_of_octal_digits_in_yaml_is_refused(tmp_path):
    """`0412345670:` unquoted (an Australian mobile written nationally) was read as octal
    and passed as a phone_number_id; it is refused naming the fix, as its quoted form is."""
    from bridge.config import read_yaml

    path = tmp_path / "bridge.yaml"
    path.write_text("owners:\n  0412345670: liam@example.com\n", encoding="utf-8")
    with pytest.raises(ValidationError) as caught:
        config(**read_yaml(path))
    assert "0412345670: a number with a trunk 0" in describe(
        caught.value, LeadSquaredConfig, "plugins.leadsquared")
