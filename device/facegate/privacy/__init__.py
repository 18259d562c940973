"""Encryption at rest of everything personal the door stores (docs/privacy.md).

``seal``   the AEAD (AES-256-GCM) and the keyed index (HMAC-SHA256), one :class:`Sealer` per key.
``keys``   where the key lives: a systemd encrypted credential, the Raspberry Pi's OTP key, or a key file.
``store``  how a SQLite file records that it is sealed, and with which key, so every opener finds it again.
"""
