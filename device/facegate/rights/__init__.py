"""Data-subject rights and retention: subject export, decrypt for an admin with the key, removal after validity."""
