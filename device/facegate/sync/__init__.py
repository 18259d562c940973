"""Fleet gallery sync: signed, versioned bundles made on an admin machine, applied atomically by each door.

Modules: :mod:`~facegate.sync.keys` (Ed25519 key files), :mod:`~facegate.sync.bundle` (the signed format),
:mod:`~facegate.sync.export` (admin gallery to bundle, door enrolment files), :mod:`~facegate.sync.apply`
(bundle to door gallery, one transaction), :mod:`~facegate.sync.chunks` (MQTT manifest, chunks, chunk store),
:mod:`~facegate.sync.mqtt` (publisher), :mod:`~facegate.sync.receiver` (the door's receiver). See docs/sync.md.
Import from the modules; this package module stays empty so that ``import facegate.sync`` pulls in nothing.
"""
