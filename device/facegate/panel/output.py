"""What the service calls after a decided, live recognition: the credential outputs to a site's panel.

Two decision modes, per output (``decision`` in ``[osdp]`` and ``[wiegand]``):

- ``"door"`` (default): the credential is sent only when this door's own access policy lets the person in
  (validity, schedule, groups, lockdown), exactly when the door itself would unlock. The panel sees the same
  people the door admits and may refuse more.
- ``"panel"``: every recognised live person with a card number is reported and the panel alone decides
  (the door's policy is not consulted for the credential; the door's relay still follows its own policy).

Recognition (k of n frames) and liveness always come first: a photo or a stranger never produces a credential.
"""

from __future__ import annotations

from typing import Literal, Protocol

Decision = Literal["door", "panel"]


class CredentialOutput(Protocol):
    """One way of handing a credential to a panel (an OSDP card read, a Wiegand frame)."""

    @property
    def channel(self) -> str:
        """``"osdp"`` or ``"wiegand"``: the ``channel`` field of ``credential_sent``."""
        ...

    @property
    def decision(self) -> Decision: ...

    def send_credential(self, person_id: str, card_number: int) -> None:
        """Queue the credential (return quickly); the output emits ``credential_sent`` or ``credential_failed``."""
        ...

    def status(self) -> dict[str, object]:
        """A JSON-able snapshot for the status topic."""
        ...

    def start(self) -> None: ...

    def close(self) -> None: ...


def wants(output: CredentialOutput, door_allows: bool) -> bool:
    """Whether ``output`` gets this recognised, live person's credential."""
    return output.decision == "panel" or door_allows
