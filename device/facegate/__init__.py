"""facegate: face access control for unattended doors, run entirely on the device."""

__version__ = "0.1.0"
