"""Enrolment: the gates a photo must pass to become a template, one at a time or a whole folder / zip at once.

``facegate enroll`` (single person), ``facegate enroll --folder`` (bulk) and the web console's upload all go
through :func:`facegate.enrolment.photo.assess`, so a photo is refused for the same reason everywhere.
"""
