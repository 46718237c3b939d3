# Everything installs what it needs: Debian packages (when run as root), then a venv.
PYTHON ?= python3
VENV := .venv
BUILD_VENV := .buildvenv
BIN := $(VENV)/bin
CONFIG ?= config/edge.yaml
DEB_PACKAGES := portaudio19-dev python3-venv python3-dev gcc alsa-utils age
# Only for `make test` (the sync tests' real servers), never installed on the device.
TEST_DEB_PACKAGES := openssh-server openssh-client rclone strace
SILERO_PIN := silero-vad==6.2.3

.PHONY: deb test-deb venv test fuzz run demo model bench bench-arm bench-sync bench-scaling bench-office bench-wear soak install uninstall clean lazyfs mutate check-targets vm-test
SOAK_CUTS ?= 200
MUTATE_JOBS ?= 1
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

# Two pytest workers (pytest-xdist), a test file each at a time: most of the suite waits on
# real time (audio paced at its rate, servers, subprocesses), so two share two cores well.
TEST_JOBS ?= 2
test: venv test-deb lazyfs
	EDGE_LAZYFS_DIR=$(LAZYFS_DIR) $(BIN)/python -m pytest -q -n $(TEST_JOBS) --dist loadfile

# The fuzz test (tests/test_fuzz.py) with many more examples than `make test` runs, new ones
# each time: FUZZ_EXAMPLES per test (a third for those that run rclone).
FUZZ_EXAMPLES ?= 300
fuzz: venv test-deb
	EDGE_FUZZ_PROFILE=fuzz EDGE_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest -q tests/test_fuzz.py

# Mutation testing with mutmut, module by module, with a score each (docs/testing.md):
# `make mutate MODULES="segmenter resample" MUTATE_JOBS=2`. Hours for all modules.
mutate: venv test-deb lazyfs
	$(BIN)/pip install -q -r requirements-mutate.txt
	EDGE_LAZYFS_DIR=$(LAZYFS_DIR) MUTATE_JOBS=$(MUTATE_JOBS) $(BIN)/python tests/mutate.py $(MODULES)

# LazyFS (a FUSE filesystem that drops unsynced writes on command: the power-cut test's SD
# card), built once from Debian packages into a cache outside the repository. Without root,
# FUSE or its sources the power-cut tests are skipped and say why (they fail instead under
# EDGE_REQUIRE_ALL=1, as .ci/run sets).
lazyfs:
	@if [ -x $(LAZYFS_DIR)/lazyfs ]; then :; \
	elif [ "$$(id -u)" != 0 ] || [ ! -e /dev/fuse ]; then \
	  echo "lazyfs: not built (needs root and /dev/fuse): the power-cut test is skipped"; \
	elif [ ! -x $(LAZYFS_SRC)/build.sh ]; then \
	  echo "lazyfs: $(LAZYFS_SRC)/build.sh not found (LAZYFS_SRC names LazyFS's sources): the power-cut tests are skipped"; \
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
	@echo "manifests (one per day folder):"; find demo-recordings -name manifest.jsonl | sort

# A longer, differently seeded run of the power-cut test than `make test` does.
soak: venv lazyfs
	@seed=$$(date +%s); echo "power cuts: $(SOAK_CUTS), seed $$seed (EDGE_POWER_CUT_SEED=$$seed repeats it)"; \
	EDGE_LAZYFS_DIR=$(LAZYFS_DIR) EDGE_POWER_CUTS=$(SOAK_CUTS) EDGE_POWER_CUT_SEED=$$seed \
	  $(BIN)/python -m pytest -q -s tests/test_power_cut.py

# The recorder on a virtual Pi (qemu TCG, Debian's kernel): snd-aloop microphone, gpio-sim
# LED, the card going away, power cuts on ext4. Root only; docs/virtual-pi.md.
vm-test: venv
	$(BIN)/python tests/vm/run.py

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
.PHONY: system-test cloud-init-test
system-test:
	bash tests/system/run.sh

# config/cloud-init/user-data run by Debian's cloud-init (NoCloud) at the first boot of a fresh
# trixie root under systemd-nspawn, up to the service running with its settings. Root only.
cloud-init-test:
	bash tests/system/cloud_init.sh

# Accuracy, speed and memory beside Silero ONNX and WebRTC VAD. A comparison package that
# cannot be installed (on a Pi, say) only removes its columns.
bench: venv
	@grep -v '^\s*#' bench/requirements.txt | grep . | while read -r requirement; do \
	  $(BIN)/pip install -q -c requirements.txt "$$requirement" \
	    || echo "bench: could not install $$requirement: its columns are skipped"; \
	done
	$(BIN)/python -m bench $(BENCH_ARGS)
	$(MAKE) --no-print-directory bench-sync
	$(MAKE) --no-print-directory bench-scaling
	$(MAKE) --no-print-directory bench-office
	$(MAKE) --no-print-directory bench-wear

# What the card's history costs: a day, a month and a year of segments, this version beside
# the last one with a single manifest.jsonl (docs/card-layout.md).
bench-scaling: venv
	$(BIN)/python -m bench.scaling $(BENCH_SCALING_ARGS)

# The office side: `edge list DIR` over 1 and 100 devices with a day, a month and a year each,
# the catalogue's first build, a warm run and one after a new day, beside the plain reader
# (docs/card-layout.md), and the last week of each. About 20 minutes here, most of it the 100-device
# year's first build (a 2 GB catalogue in EDGE_BENCH_TMP or /tmp).
bench-office: venv
	$(BIN)/python -m bench.office $(BENCH_OFFICE_ARGS)

# What the recorder writes to the SD card per hour (silence, a lesson, no microphone) beside
# a stopped recorder, on a loop-mounted ext4 card, about 22 minutes; as root.
# EDGE_WEAR_QUICK=1 only checks that it runs; BENCH_WEAR_ARGS="--tree DIR" measures another checkout.
bench-wear: venv
	$(BIN)/python -m bench.wear $(BENCH_WEAR_ARGS)

# Instructions per window on aarch64 (qemu-user and QEMU's counting plugin, in an arm64 root
# built once into /var/cache/edge-arm) and the share of a Pi core they come to; as root.
bench-arm: venv
	$(BIN)/python -m bench.arm $(BENCH_ARM_ARGS)

# `edge sync` beside a bare `rclone copy` of the same files to sshd on 127.0.0.1, for 43 five-minute
# segments and 300 short ones, in interleaved rounds; prints both ratios against the 1.1x goal.
bench-sync: venv test-deb
	$(BIN)/python -m bench.sync $(BENCH_SYNC_ARGS)

# The README's commands in fresh Debian roots (ARM under qemu), compared with this machine's
# output, then the virtual Pi built for arm64 (its image takes about 40 minutes to build the
# first time); as root. TARGETS="trixie-amd64" VM_ARCHS= runs one root and no VM (CI: that).
TARGETS ?= trixie-amd64 trixie-arm64 bookworm-arm64
VM_ARCHS ?= arm64
VM_ARCH_CUTS ?= 10
check-targets: venv
	bash tests/targets/check_targets.sh $(TARGETS)
	for arch in $(VM_ARCHS); do EDGE_VM_ARCH=$$arch EDGE_VM_CUTS=$(VM_ARCH_CUTS) $(BIN)/python tests/vm/run.py || exit 1; done

clean:
	rm -rf $(VENV) $(BUILD_VENV) demo-recordings .pytest_cache
