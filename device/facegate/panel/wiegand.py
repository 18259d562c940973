"""Wiegand frames: 26-bit H10301 and 34-bit (H10306 layout), with their parity bits. Pure functions.

Layout (bit 0 is sent first):

- 26-bit H10301: ``E FFFFFFFF CCCCCCCCCCCCCCCC O``: even parity over bits 1-12, facility code 0-255 in bits
  1-8, card number 0-65535 in bits 9-24, odd parity over bits 13-24.
- 34-bit: ``E FFFFFFFFFFFFFFFF CCCCCCCCCCCCCCCC O``: even parity over bits 1-16, facility code 0-65535 in bits
  1-16, card number 0-65535 in bits 17-32, odd parity over bits 17-32.

A number that does not fit its field is refused (:class:`CardFormatError`), never truncated: a truncated card
number is another person's card.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from facegate.errors import FacegateError

WiegandFormatName = Literal["26", "34"]


class CardFormatError(FacegateError):
    """A facility code or card number does not fit the configured format."""


@dataclass(frozen=True)
class WiegandFormat:
    name: WiegandFormatName
    bits: int
    facility_bits: int
    card_bits: int

    @property
    def max_facility(self) -> int:
        return (1 << self.facility_bits) - 1

    @property
    def max_card(self) -> int:
        return (1 << self.card_bits) - 1


FORMATS: dict[str, WiegandFormat] = {
    "26": WiegandFormat("26", 26, 8, 16),
    "34": WiegandFormat("34", 34, 16, 16),
}
# The largest card number any supported format carries (both use a 16-bit card field).
MAX_CARD_NUMBER = max(f.max_card for f in FORMATS.values())


def check_fits(fmt: WiegandFormat, facility_code: int, card_number: int) -> None:
    if not 0 <= facility_code <= fmt.max_facility:
        raise CardFormatError(f"facility code {facility_code} does not fit the {fmt.bits}-bit format "
                              f"(0-{fmt.max_facility})")
    if not 0 <= card_number <= fmt.max_card:
        # No number in the message: it ends up in credential_failed events, and a card number is a credential.
        raise CardFormatError(f"the card number does not fit the {fmt.bits}-bit format (0-{fmt.max_card})")


def _field(value: int, width: int) -> list[int]:
    return [(value >> (width - 1 - i)) & 1 for i in range(width)]


def encode(fmt: WiegandFormat, facility_code: int, card_number: int) -> list[int]:
    """The frame's bits in transmission order (most significant data bit first), parity included."""
    check_fits(fmt, facility_code, card_number)
    data = _field(facility_code, fmt.facility_bits) + _field(card_number, fmt.card_bits)
    half = len(data) // 2
    even = sum(data[:half]) % 2  # makes the first half plus this bit even
    odd = 1 - sum(data[half:]) % 2  # makes the second half plus this bit odd
    return [even, *data, odd]


def decode(fmt: WiegandFormat, bits: list[int]) -> tuple[int, int]:
    """(facility code, card number) of a frame; raises CardFormatError on a wrong length or parity."""
    if len(bits) != fmt.bits or any(b not in (0, 1) for b in bits):
        raise CardFormatError(f"expected {fmt.bits} bits of 0/1, got {len(bits)}")
    data = bits[1:-1]
    half = len(data) // 2
    if (bits[0] + sum(data[:half])) % 2 != 0 or (bits[-1] + sum(data[half:])) % 2 != 1:
        raise CardFormatError("parity error")
    value = int("".join(map(str, data)), 2)
    return value >> fmt.card_bits, value & fmt.max_card


def to_bytes(bits: list[int]) -> bytes:
    """Bits packed most significant first, the last byte padded with zeros (OSDP raw card data)."""
    out = bytearray((len(bits) + 7) // 8)
    for i, bit in enumerate(bits):
        if bit:
            out[i // 8] |= 0x80 >> (i % 8)
    return bytes(out)
