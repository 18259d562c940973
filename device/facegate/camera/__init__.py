"""Frame sources behind one interface: Pi camera, OpenCV (V4L2, files, streams) and deterministic replay."""
