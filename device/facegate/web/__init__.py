"""The device's web console (admin and viewer pages) and the door screen (``/terminal``).

Runs on its own threads inside the service and talks to the frame loop only through :class:`LiveSlot`
(an overwrite-only slot of the latest frame and its faces) and the event emitter's listeners, so a slow or
hostile client can never stall recognition or the door.
"""
