"""Accuracy, anti-spoofing and calibration figures on the real data in ../shared (``make evaluate``)."""
