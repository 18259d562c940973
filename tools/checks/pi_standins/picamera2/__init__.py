"""pi-check's STAND-IN for Raspberry Pi OS's picamera2 (not the real library; Debian has no libcamera binding).

It reproduces the one thing that broke installs: importing the real picamera2 loads C extensions compiled
against the system numpy (python3-simplejpeg, python3-pidng...). Here Debian's python3-h5py plays that part: it is
compiled against the release's python3-numpy, so from a venv whose own numpy has another ABI the import fails
exactly as on a Pi ("numpy.dtype size changed"). There is no camera under emulation: opening one raises
RuntimeError, as the real Picamera2() does when libcamera finds no camera.
"""

import h5py  # noqa: F401  (the numpy-compiled extension; see above)

STANDIN = True


class Picamera2:
    def __init__(self, camera_num: int = 0) -> None:
        raise RuntimeError("Camera __init__ sequence did not complete (pi-check stand-in: no camera is emulated)")
