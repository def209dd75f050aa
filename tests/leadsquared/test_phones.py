"""Lookup candidates and the stored form of WhatsApp numbers."""

from __future__ import annotations

import pytest

from plugins.leadsquared.phones import (
    lookup_candidates,
    same_number,
    search_keys,
    storage_format,
)


def test_india_gives_code_national_national_and_trunk_forms_digits_only():
    assert lookup_candidates("+919876543210") == ["919876543210", "9876543210", "09876543210"]


def test_no_candidate_has_spaces_or_hyphens():
    for number in ["+919876543210", "+5511987654321", "+5491123456789", "+16502530000",
                   "+447911123456"]:
        assert all(c.isdigit() for c in lookup_candidates(number)), number  # not even '+'


def test_a_whatsapp_wa_id_without_plus_gives_the_same_candidates():
    assert lookup_candidates("919876543210") == lookup_candidates("+919876543210")


def test_a_plan_without_a_trunk_prefix_gets_no_trunk_form():
    assert lookup_candidates("+16502530000") == ["16502530000", "6502530000"]


def test_brazil_mobile_with_ninth_digit_also_gives_the_eight_digit_variant():
    assert lookup_candidates("+5511987654321") == [
        "5511987654321", "11987654321", "011987654321",
        "551187654321", "1187654321", "01187654321"]


def test_brazil_old_eight_digit_mobile_also_gives_the_ninth_digit_variant():
    candidates = lookup_candidates("+551187654321")
    assert candidates[:3] == ["551187654321", "1187654321", "01187654321"]
    assert candidates[3:] == ["5511987654321", "11987654321", "011987654321"]


def test_brazil_landline_gets_no_ninth_digit_variant():
    assert lookup_candidates("+551134567890") == ["551134567890", "1134567890", "01134567890"]


def test_argentina_mobile_with_nine_also_gives_the_form_without_it():
    assert lookup_candidates("+5491123456789") == [
        "5491123456789", "91123456789", "091123456789",
        "541123456789", "1123456789", "01123456789"]


def test_argentina_number_without_nine_also_gives_the_mobile_form():
    assert lookup_candidates("+541123456789")[3:] == [
        "5491123456789", "91123456789", "091123456789"]


def test_search_keys_are_the_national_digits_then_the_number_as_written():
    assert search_keys("+919876543210") == ["9876543210", "98765 43210"]
    assert search_keys("not a number") == []


@pytest.mark.parametrize("stored", ["0091 98765 43210", "+91 (98765) 43210", "098765-43210",
                                    "9876543210", "+91-9876543210"])
def test_same_number_accepts_any_punctuation_and_prefix_of_this_number(stored):
    assert same_number(stored, "+919876543210")


@pytest.mark.parametrize("stored", ["+91-9876543211", "19876543210", "0044 9876543210", None,
                                    "987654321"])
def test_same_number_refuses_other_numbers(stored):
    assert not same_number(stored, "+919876543210")


def test_candidates_never_repeat():
    for number in ["+919876543210", "+5511987654321", "+5491123456789", "+16502530000"]:
        candidates = lookup_candidates(number)
        assert len(candidates) == len(set(candidates))


@pytest.mark.parametrize("key", ["US.13491208655302741918", "", "abc", "12", "+"])
def test_non_phone_keys_give_no_candidates(key):
    assert lookup_candidates(key) == []


def test_storage_format_is_plus_code_hyphen_national():
    assert storage_format("+919876543210") == "+91-9876543210"
    assert storage_format("971501234567") == "+971-501234567"


def test_storage_format_keeps_the_number_as_given():
    assert storage_format("+5511987654321") == "+55-11987654321"


@pytest.mark.parametrize("key", ["US.13491208655302741918", "", "12"])
def test_storage_format_rejects_non_phone_keys(key):
    with pytest.raises(ValueError):
        storage_format(key)


@pytest.mark.parametrize(("stored", "sent"), [
    ("+52-1-55-1234-5678", "+525512345678"), ("525512345678", "+5215512345678"),
    ("+55-11-8765-4321", "+5511987654321"), ("5511987654321", "+551187654321"),
    ("+54-11-2345-6789", "+5491123456789"), ("5491123456789", "+541123456789")])
def test_each_form_of_a_variant_number_is_the_same_number_and_shares_a_directory_key(
        stored, sent):
    from plugins.leadsquared.directory import chat_keys, number_keys

    assert same_number(stored, sent)
    assert set(number_keys(stored)) & set(chat_keys(sent))


def test_a_mexican_wa_id_with_the_old_1_gives_both_forms_to_look_up():
    assert lookup_candidates("5215512345678")[:1] == ["525512345678"]
    assert "5215512345678" in lookup_candidates("+525512345678")
