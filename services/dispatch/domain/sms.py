"""How long an SMS is, the way carriers bill it and providers limit it (no I/O).

A text whose every character is in the GSM 03.38 default alphabet (3GPP TS 23.038) goes as
GSM-7: 160 septets in one segment, 153 per segment once concatenated (the rest of each segment
carries the header that joins them). A character of the alphabet's extension table
(``^ { } \\ [ ~ ] | €`` and form feed) is an escape plus a septet: it costs 2, and the pair is
never split across two segments.

Any other character makes the whole text UCS-2 (UTF-16 on the wire): 70 units in one segment, 67
per segment concatenated. A character outside the Basic Multilingual Plane (most emoji) is a
surrogate pair, 2 units, never split across two segments either.

Providers limit the text, not the segments, in characters: Twilio counts an emoji as more than
one, so :attr:`SmsSize.characters` counts UTF-16 code units (an emoji 2, everything else 1).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Encoding = Literal["gsm7", "ucs2"]

GSM7_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ"  # \x1b is the escape to the extension table, not a character
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
).replace("\x1b", "")
"""The default alphabet in code order (0x00 to 0x7F), without the escape: 1 septet each."""

GSM7_EXTENSION = "\f^{}\\[~]|€"
"""The extension table's characters: the escape and a septet, 2 septets each."""

GSM7_SINGLE, GSM7_MULTI = 160, 153
UCS2_SINGLE, UCS2_MULTI = 70, 67

_NOT_GSM7 = re.compile("[^" + re.escape(GSM7_BASIC + GSM7_EXTENSION) + "]")


@dataclass(frozen=True, slots=True)
class SmsSize:
    encoding: Encoding
    units: int
    """What the segments hold: septets (GSM-7) or UTF-16 code units (UCS-2)."""
    segments: int
    """Billed segments; 0 for an empty text, which is nothing to send."""
    characters: int
    """UTF-16 code units: the length providers limit (an emoji counts 2)."""

    def describe(self) -> str:
        """``"1234 characters (GSM-7, 9 segments)"``."""
        name = "GSM-7" if self.encoding == "gsm7" else "UCS-2"
        plural = "" if self.segments == 1 else "s"
        return f"{self.characters} characters ({name}, {self.segments} segment{plural})"


def characters(text: str) -> int:
    """The text's length in UTF-16 code units, as providers count it: an emoji (outside the
    BMP) counts 2. A lone surrogate, which no JSON or form carries whole, counts 1."""
    if text.isascii():
        return len(text)
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def measure(text: str) -> SmsSize:
    """The encoding the text goes in, its length in that encoding's units, and its segments."""
    length = characters(text)
    if _NOT_GSM7.search(text) is None:
        escaped = sum(text.count(c) for c in GSM7_EXTENSION)
        units = len(text) + escaped
        costs = (2 if c in GSM7_EXTENSION else 1 for c in text) if escaped else None
        return SmsSize("gsm7", units, _segments(units, costs, GSM7_SINGLE, GSM7_MULTI), length)
    pairs = length - len(text)
    costs = (2 if ord(c) > 0xFFFF else 1 for c in text) if pairs else None
    return SmsSize("ucs2", length, _segments(length, costs, UCS2_SINGLE, UCS2_MULTI), length)


def _segments(units: int, costs: Iterable[int] | None, single: int, multi: int) -> int:
    """Segments for ``units``; ``costs`` (each character's units) when some character takes 2,
    which then never straddles two segments: a segment that has 1 unit left for it goes out
    with that unit empty."""
    if units == 0:
        return 0
    if units <= single:
        return 1
    if costs is None:
        return math.ceil(units / multi)
    segments, room = 1, multi
    for cost in costs:
        if cost > room:
            segments += 1
            room = multi
        room -= cost
    return segments
