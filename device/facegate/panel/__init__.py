"""Credential outputs for existing access panels: an OSDP reader (Secure Channel) and Wiegand output.

The door stands in for a card reader: after a decided, live recognition it reports the person's
``card_number`` to the site's panel (see :mod:`facegate.panel.output`). Each module has one job: ``wiegand``
encodes frames, ``wiegand_tx`` clocks them out on two GPIOs, ``osdp_channel`` is the serial line,
``osdp_keys`` the secure-channel key file, ``osdp_link`` turns link samples into events, ``osdp_pd`` is the
OSDP peripheral device (LibOSDP does the protocol).
"""
