"""The process on its host: systemd notification, returning freed memory, log set-up."""
