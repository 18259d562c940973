"""The on-device gallery: enrolled people, their templates, and the in-memory index used for 1:N search."""
