# The course's commands. Every target creates .venv on first use (scripts/setup.sh).
.PHONY: course test run-course benchmark lock setup clean

PY := .venv/bin/python

setup:
	@scripts/setup.sh

## make course: set everything up and open JupyterLab on the notebooks
course: setup
	$(PY) -m jupyter lab notebooks/ $$([ "$$(id -u)" = 0 ] && echo --allow-root)  # JupyterLab refuses root without it (containers, CI machines)

## make test: the whole test suite (library tests, every notebook under nbval, then
## the cluster chapters again against a real Kubernetes cluster, infra/k8s/).
## The cluster's Go builds start first, in the background and niced: they use the
## CPU the tests leave idle, and the cluster fixture waits for them (build.sh locks).
## scripts/ensure-docker.sh makes Docker ready (CI) or explains why the container
## tests will skip (a laptop without Docker).
test:
	@infra/k8s/build-in-background.sh
	@scripts/setup.sh
	@scripts/ensure-docker.sh && scripts/ensure-chromium.sh
	$(PY) -m pytest

## make run-course: execute every notebook in order, headless, and print a summary
run-course: setup
	$(PY) -m mnist_lib.run_course

## make benchmark: measure time-to-accuracy and write benchmarks/results/
benchmark: setup
	$(PY) -m benchmarks.run

## make lock: refresh constraints.txt from a fresh install of requirements.txt
lock:
	rm -rf /tmp/course-lock-venv && python3.11 -m venv /tmp/course-lock-venv
	/tmp/course-lock-venv/bin/pip install -q -r requirements.txt soupsieve==2.8
	( sed -n 1,3p constraints.txt; /tmp/course-lock-venv/bin/pip freeze --exclude-editable ) > constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf outputs test-artifacts
