"""The door service assembled in steps: one builder per subsystem, the start-up notes and the start-time recovery."""
