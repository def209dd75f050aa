"""Lookup candidates and the stored form of WhatsApp numbers."""

from __future__ import annotations

import pytest

from plugins.leadsquared.phones import lookup_candidates, storage_format


def test_india_gives_plus_national_hyphenated_and_digits_in_order():
    assert lookup_candidates("+919876543210") == [
        "+919876543210", "9876543210", "+91-9876543210", "919876543210"]


def test_a_whatsapp_wa_id_without_plus_gives_the_same_candidates():
    assert lookup_candidates("919876543210") == lookup_candidates("+919876543210")


def test_brazil_mobile_with_ninth_digit_also_gives_the_eight_digit_variant():
    assert lookup_candidates("+5511987654321") == [
        "+5511987654321", "11987654321", "+55-11987654321", "5511987654321",
        "+551187654321", "1187654321", "+55-1187654321", "551187654321"]


def test_brazil_old_eight_digit_mobile_also_gives_the_ninth_digit_variant():
    candidates = lookup_candidates("+551187654321")
    assert candidates[:4] == ["+551187654321", "1187654321", "+55-1187654321", "551187654321"]
    assert candidates[4:] == [
        "+5511987654321", "11987654321", "+55-11987654321", "5511987654321"]


def test_brazil_landline_gets_no_ninth_digit_variant():
    assert lookup_candidates("+551134567890") == [
        "+551134567890", "1134567890", "+55-1134567890", "551134567890"]


def test_argentina_mobile_with_nine_also_gives_the_form_without_it():
    assert lookup_candidates("+5491123456789") == [
        "+5491123456789", "91123456789", "+54-91123456789", "5491123456789",
        "+541123456789", "1123456789", "+54-1123456789", "541123456789"]


def test_argentina_number_without_nine_also_gives_the_mobile_form():
    assert lookup_candidates("+541123456789")[4:] == [
        "+5491123456789", "91123456789", "+54-91123456789", "5491123456789"]


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
