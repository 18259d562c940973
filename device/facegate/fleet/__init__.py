"""The admin side of a multi-door site: one console for people, doors and one journal (docs/fleet.md).

Nothing in the door's service imports this package; it imports the door's lower floors (gallery, sync
export and signing, enrolment gates, command signing, web accounts and server plumbing).
"""
