"""Checks of the installed door that take minutes or root (pi-check, systemd-check, ha-check), soaks, attacks."""
