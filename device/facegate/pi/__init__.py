"""What only a Raspberry Pi install needs: keeping the venv on the system numpy, and doctor's Pi checks."""
