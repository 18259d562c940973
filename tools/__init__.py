"""Host-side tools of the checkout (never installed on a door): a package so tools and tests import each other's
helpers by name (``from tools.demo import augment``) instead of putting folders on ``sys.path``.

- ``tools/bench/``: timings and footprints (``make bench``);
- ``tools/eval/``: accuracy, anti-spoofing and calibration figures on the real data (``make evaluate``);
- ``tools/models/``: rebuild or check ``models/`` from pinned archives (``make models``, ``make models-check``);
- ``tools/checks/``: long or root-only checks of the installed door (``make pi-check``, ``systemd-check``,
  ``ha-check``), soaks and the attack run;
- here: the demo and its scenes, the camera and broker servers the tests and tools share, the fleet simulator.

Each script still runs as a file (``python tools/eval/evaluate.py``): its first two lines put the checkout's root
(for ``tools``) and ``device/`` (for ``facegate``) on ``sys.path`` when it is run that way; run as a module
(``python -m tools.eval.evaluate``) or imported by the tests, importing ``tools`` puts ``device/`` there. Either way
a tool uses this checkout's ``facegate``, with or without the editable install.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

if str(ROOT / "device") not in sys.path:
    sys.path.insert(0, str(ROOT / "device"))
