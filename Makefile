# Everything installs what it needs: Debian packages (when run as root), then a venv.
PYTHON ?= python3
VENV := .venv
BUILD_VENV := .buildvenv
BIN := $(VENV)/bin
CONFIG ?= config/edge.yaml
DEB_PACKAGES := portaudio19-dev python3-venv python3-dev gcc alsa-utils age
# Only for `make test` (the sync tests' real servers), never installed on the device.
TEST_DEB_PACKAGES := openssh-server openssh-client rclone
SILERO_PIN := silero-vad==6.2.3

.PHONY: deb test-deb venv test run demo model bench bench-sync soak install uninstall clean lazyfs mutate check-targets
SOAK_CUTS ?= 200
LAZYFS_DIR ?= /var/tmp/edge-lazyfs
LAZYFS_SRC ?= ../shared/tools/lazyfs

# Debian packages are installed only when missing and only when we are root; otherwise
# the build of PyAudio says what is missing.
# edge/target.py: one line and a stop where no TFLite runtime exists (32-bit trixie), and the
# pieces PyPI has no wheels for here (lgpio on Raspberry Pi OS, numpy on 32-bit ARM).
deb:
	@$(PYTHON) edge/target.py check
	@missing=""; for p in $(DEB_PACKAGES) $$($(PYTHON) edge/target.py debian-packages); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else echo "missing Debian packages:$$missing (run 'sudo make $(MAKECMDGOALS)' once or install them)"; fi; \
	fi

test-deb:
	@$(MAKE) --no-print-directory deb DEB_PACKAGES="$(TEST_DEB_PACKAGES)"

$(BIN)/edge: requirements.txt requirements-test.txt pyproject.toml | deb
	$(PYTHON) -m venv $$($(PYTHON) edge/target.py venv-options) $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt -r requirements-test.txt
	$(BIN)/pip install -q --no-deps $(SILERO_PIN)
	$(BIN)/pip install -q --no-deps -e .
	touch $@

venv: $(BIN)/edge

test: venv test-deb lazyfs
	EDGE_LAZYFS_DIR=$(LAZYFS_DIR) $(BIN)/python -m pytest -q

# One-line bugs planted one at a time in a copy of the tree: every one must fail its tests.
mutate: venv lazyfs
	EDGE_LAZYFS_DIR=$(LAZYFS_DIR) $(BIN)/python tests/mutate.py $(MUTATIONS)

# LazyFS (a FUSE filesystem that drops unsynced writes on command: the power-cut test's SD
# card), built once from Debian packages into a cache outside the repository. Without root
# or FUSE the power-cut test is skipped and says why.
lazyfs:
	@if [ -x $(LAZYFS_DIR)/lazyfs ]; then :; \
	elif [ "$$(id -u)" != 0 ] || [ ! -e /dev/fuse ]; then \
	  echo "lazyfs: not built (needs root and /dev/fuse): the power-cut test is skipped"; \
	elif [ ! -x $(LAZYFS_SRC)/build.sh ]; then \
	  echo "lazyfs: $(LAZYFS_SRC)/build.sh not found (set LAZYFS_SRC): the power-cut test will fail"; \
	else rm -rf $(LAZYFS_DIR).tmp && $(LAZYFS_SRC)/build.sh $(LAZYFS_DIR).tmp \
	  && mv $(LAZYFS_DIR).tmp $(LAZYFS_DIR); fi

run: venv
	$(BIN)/edge run --config $(CONFIG)

# The same pipeline as `make run`, on the bundled recordings instead of a microphone.
demo: venv
	rm -rf demo-recordings
	$(BIN)/edge --log-level warning process tests/data/lesson_15s.wav tests/data/silero_test_6s.wav \
	  --out demo-recordings --config $(CONFIG)
	@echo "segments on disk:"; find demo-recordings -name '*.wav' | sort
	@echo "manifest: demo-recordings/manifest.jsonl"

# A longer, differently seeded run of the power-cut test than `make test` does.
soak: venv lazyfs
	@seed=$$(date +%s); echo "power cuts: $(SOAK_CUTS), seed $$seed (EDGE_POWER_CUT_SEED=$$seed repeats it)"; \
	EDGE_LAZYFS_DIR=$(LAZYFS_DIR) EDGE_POWER_CUTS=$(SOAK_CUTS) EDGE_POWER_CUT_SEED=$$seed \
	  $(BIN)/python -m pytest -q -s tests/test_power_cut.py

# The model is rebuilt in its own venv: TensorFlow is never needed on the device.
$(BUILD_VENV)/bin/python: models/requirements-build.txt
	$(PYTHON) -m venv $(BUILD_VENV)
	$(BUILD_VENV)/bin/pip install -q --upgrade pip
	$(BUILD_VENV)/bin/pip install -q -r models/requirements-build.txt
	$(BUILD_VENV)/bin/pip install -q --no-deps $(SILERO_PIN)
	touch $@

model: $(BUILD_VENV)/bin/python
	$(BUILD_VENV)/bin/python models/build_model.py

# On the Pi, as root: Debian packages, a venv under /opt, the unit enabled and started.
install:
	PYTHON=$(PYTHON) bash systemd/install.sh

# Removes all but the recordings under /var/lib/edge-recorder.
uninstall:
	bash systemd/uninstall.sh

# The service under a real systemd: boots Debian (EDGE_SYSTEM_SUITE, default trixie) with
# systemd-nspawn, `make install`s the committed HEAD there and checks it. Root only.
.PHONY: system-test
system-test:
	bash tests/system/run.sh

# Accuracy, speed and memory beside Silero ONNX and WebRTC VAD. A comparison package that
# cannot be installed (on a Pi, say) only removes its columns.
bench: venv
	@grep -v '^\s*#' bench/requirements.txt | grep . | while read -r requirement; do \
	  $(BIN)/pip install -q -c requirements.txt "$$requirement" \
	    || echo "bench: could not install $$requirement: its columns are skipped"; \
	done
	$(BIN)/python -m bench $(BENCH_ARGS)
	$(MAKE) --no-print-directory bench-sync

# `edge sync` beside a bare `rclone copy` of the same files to sshd on 127.0.0.1, for 43 five-minute
# segments and 300 short ones, in interleaved rounds; prints both ratios against the 1.1x goal.
bench-sync: venv test-deb
	$(BIN)/python -m bench.sync $(BENCH_SYNC_ARGS)

# The README's commands in fresh Debian roots (ARM under qemu), compared with this machine's
# output; as root. TARGETS="trixie-amd64" runs one (CI: that one).
TARGETS ?= trixie-amd64 trixie-arm64 bookworm-arm64
check-targets: venv
	bash tests/targets/check_targets.sh $(TARGETS)

clean:
	rm -rf $(VENV) $(BUILD_VENV) demo-recordings .pytest_cache
