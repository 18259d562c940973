"""How a gallery stores each personal value: sealed under the door's key (facegate.privacy), or as given.

Each value's associated data names its column and person, so a ciphertext moved elsewhere fails to open. A new
template-like column (e.g. negative templates) uses seal_template/open_template with its own ``column`` name,
and adds its UPDATE to ``Gallery._seal_all``.
"""

from __future__ import annotations

from typing import Any

from facegate.privacy.seal import Sealer

__all__ = ["ValueSealing"]


class ValueSealing:
    """The gallery's value codec; ``sealer`` is None for a plain gallery."""

    sealer: Sealer | None


    def seal_template(self, person_id: str, embedding: bytes, source: str | None = None,
                      column: str = "templates.embedding") -> tuple[bytes, bytes | str | None]:
        """A template's stored form (embedding, source) for this gallery: sealed, or as given when plain."""
        if self.sealer is None:
            return embedding, source
        return (self.sealer.seal(embedding, f"{column}|{person_id}"),
                self.sealer.seal_text(source, f"{column}.source|{person_id}"))

    def open_template(self, person_id: str, stored: bytes, column: str = "templates.embedding") -> bytes:
        """The template's float32 bytes from its stored form."""
        if self.sealer is None:
            return bytes(stored)
        return self.sealer.open(bytes(stored), f"{column}|{person_id}")

    def open_source(self, person_id: str, stored: bytes | str | None,
                    column: str = "templates.embedding") -> str | None:
        if self.sealer is None or not isinstance(stored, bytes):
            return None if stored is None else str(stored)
        return self.sealer.open_text(stored, f"{column}.source|{person_id}")

    def _seal_person_row(self, person_id: str, name: str | None, metadata: str,
                         card: int | None) -> tuple[Any, Any, Any, Any]:
        """(name, metadata, card_number, card_sealed) as stored: the card number column holds the card's keyed
        hash (unique and searchable), the card itself is sealed."""
        if self.sealer is None:
            return name, metadata, card, None
        s = self.sealer
        return (s.seal_text(name, f"persons.name|{person_id}"), s.seal_text(metadata, f"persons.metadata|{person_id}"),
                None if card is None else self.card_key(card),
                None if card is None else s.seal_text(str(card), f"persons.card|{person_id}"))

    def seal_person(self, person_id: str, name: str | None, metadata: str,
                    card: int | None) -> tuple[Any, Any, Any, Any]:
        """The stored form of a person's (name, metadata JSON, card_number, card_sealed) columns."""
        return self._seal_person_row(person_id, name, metadata, card)

    def open_person(self, person_id: str, name: Any, metadata: Any, card: Any,
                    card_sealed: Any) -> tuple[str | None, str, int | None]:
        """(name, metadata JSON, card number) from the stored columns."""
        if self.sealer is None:
            return name, metadata, None if card is None else int(card)
        s = self.sealer
        sealed_card = s.open_text(card_sealed, f"persons.card|{person_id}")
        return (s.open_text(name, f"persons.name|{person_id}"),
                s.open_text(metadata, f"persons.metadata|{person_id}") or "{}",
                None if sealed_card is None else int(sealed_card))

    def card_key(self, card_number: int) -> int | str:
        """What the ``card_number`` column holds for a card: the number, or its keyed hash when sealed."""
        return card_number if self.sealer is None else self.sealer.index(f"card:{card_number}")
