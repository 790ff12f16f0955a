"""The SMS segment counter: GSM-7 and UCS-2, single and concatenated segments, and the
characters that take two units and never straddle a segment."""

from __future__ import annotations

import pytest

from services.dispatch.domain.sms import (
    GSM7_BASIC,
    GSM7_EXTENSION,
    SmsSize,
    characters,
    measure,
)

EMOJI = "\U0001f600"  # outside the BMP: a surrogate pair in UTF-16
CYRILLIC = "ж"  # in the BMP, not in GSM-7


def test_an_empty_text_is_nothing_to_send() -> None:
    assert measure("") == SmsSize("gsm7", 0, 0, 0)


def test_the_default_alphabet_has_its_127_characters_and_the_extension_its_10() -> None:
    assert len(GSM7_BASIC) == len(set(GSM7_BASIC)) == 127
    assert len(GSM7_EXTENSION) == len(set(GSM7_EXTENSION)) == 10
    assert not set(GSM7_BASIC) & set(GSM7_EXTENSION)
    # Code order: '@' is 0x00, '¡' 0x40, '¿' 0x60 (0x1B, the escape, is left out).
    assert (GSM7_BASIC[0], GSM7_BASIC[0x40 - 1], GSM7_BASIC[0x60 - 1]) == ("@", "¡", "¿")


@pytest.mark.parametrize("char", list(GSM7_BASIC))
def test_every_default_alphabet_character_is_one_septet(char: str) -> None:
    assert measure(char * 160) == SmsSize("gsm7", 160, 1, 160)


@pytest.mark.parametrize("char", list(GSM7_EXTENSION))
def test_every_extension_character_is_two_septets(char: str) -> None:
    assert measure(char * 80) == SmsSize("gsm7", 160, 1, 80)
    assert measure(char * 81).segments == 2


@pytest.mark.parametrize(
    ("length", "segments"),
    [
        (1, 1),
        (160, 1),
        (161, 2),
        (2 * 153, 2),
        (2 * 153 + 1, 3),
        (3 * 153, 3),
        (3 * 153 + 1, 4),
        (10 * 153, 10),
        (10 * 153 + 1, 11),
    ],
)
def test_gsm7_segments_are_160_alone_and_153_concatenated(length: int, segments: int) -> None:
    assert measure("a" * length) == SmsSize("gsm7", length, segments, length)


def test_an_escape_counts_towards_the_single_segment() -> None:
    assert measure("a" * 158 + "€") == SmsSize("gsm7", 160, 1, 159)
    assert measure("a" * 159 + "€") == SmsSize("gsm7", 161, 2, 160)


def test_an_escape_is_never_split_across_segments() -> None:
    # 152 + 2 + 152 = 306 septets would fit two segments of 153, but the euro cannot be split:
    # the first segment goes with 152, the euro opens the second, and one septet spills over.
    assert measure("a" * 152 + "€" + "a" * 152) == SmsSize("gsm7", 306, 3, 305)
    # One septet less and it fits: 152 | 2 + 151.
    assert measure("a" * 152 + "€" + "a" * 151).segments == 2
    # The euro ending a segment exactly is no spill.
    assert measure("a" * 151 + "€" + "a" * 153).segments == 2


@pytest.mark.parametrize(
    ("length", "segments"),
    [(1, 1), (70, 1), (71, 2), (2 * 67, 2), (2 * 67 + 1, 3), (10 * 67, 10), (10 * 67 + 1, 11)],
)
def test_ucs2_segments_are_70_alone_and_67_concatenated(length: int, segments: int) -> None:
    assert measure(CYRILLIC * length) == SmsSize("ucs2", length, segments, length)


def test_one_character_outside_gsm7_makes_the_whole_text_ucs2() -> None:
    assert measure("a" * 69 + "ç") == SmsSize("ucs2", 70, 1, 70)  # GSM-7 has Ç, not ç
    assert measure("a" * 70 + "ç") == SmsSize("ucs2", 71, 2, 71)
    assert measure("It\u2019s here").encoding == "ucs2"  # a curly apostrophe
    assert measure("It's here").encoding == "gsm7"
    # An extension character costs one UTF-16 unit once the text is UCS-2.
    assert measure("€" * 69 + "ç") == SmsSize("ucs2", 70, 1, 70)


def test_an_emoji_is_two_units() -> None:
    assert measure(EMOJI) == SmsSize("ucs2", 2, 1, 2)
    assert measure(CYRILLIC * 68 + EMOJI) == SmsSize("ucs2", 70, 1, 70)
    assert measure(CYRILLIC * 69 + EMOJI) == SmsSize("ucs2", 71, 2, 71)
    assert measure(EMOJI * 35).segments == 1
    assert measure(EMOJI * 36).segments == 2


def test_an_emoji_is_never_split_across_segments() -> None:
    # 66 + 2 + 66 = 134 units would fit two segments of 67, but the surrogate pair cannot be
    # split: 66 | 2 + 65 | 1.
    assert measure(CYRILLIC * 66 + EMOJI + CYRILLIC * 66) == SmsSize("ucs2", 134, 3, 134)
    assert measure(CYRILLIC * 66 + EMOJI + CYRILLIC * 65).segments == 2
    assert measure(CYRILLIC * 65 + EMOJI + CYRILLIC * 67).segments == 2
    # Emoji only: 33 pairs fill 66 of each 67 units, so 66 of them take 2 segments, 67 take 3.
    assert measure(EMOJI * 66).segments == 2
    assert measure(EMOJI * 67).segments == 3


def test_characters_count_utf16_code_units() -> None:
    assert characters("") == 0
    assert characters("Hi Ana") == 6
    assert characters("€ç" + CYRILLIC) == 3
    assert characters(EMOJI + "!") == 3
    assert characters("a\ud800b") == 3  # a lone surrogate neither fails nor vanishes
    assert measure("a\ud800b") == SmsSize("ucs2", 3, 1, 3)


def test_describe_says_length_encoding_and_segments() -> None:
    assert measure("a" * 161).describe() == "161 characters (GSM-7, 2 segments)"
    assert measure(EMOJI).describe() == "2 characters (UCS-2, 1 segment)"
