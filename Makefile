# ppdet_dac: everything a fresh machine with Python 3.11 needs is installed by these targets.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed

.PHONY: setup demo test test-fast test-long lint format op onnx cuda-build gpu-check clean FORCE

setup: $(STAMP)

OP_DIR := custom_ops/ms_deform_attn
# The op library's sources (the standalone GPU check program and its helper are not part of it).
OP_SOURCES := $(filter-out $(OP_DIR)/msda_gpu_check.cu $(OP_DIR)/ptxas_summary.py,$(wildcard $(OP_DIR)/*))

$(STAMP): requirements.txt requirements-base.txt requirements-dev.txt setup.py $(OP_SOURCES)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade "pip==25.3"
	$(PIP) install -q -r requirements.txt -r requirements-dev.txt
	$(PIP) install -q --no-build-isolation -e .
	touch $(STAMP)

# The demo prints its total time from this target's start, setup included.
demo:
	@start=$$(date +%s.%N) && $(MAKE) --no-print-directory setup && \
		echo "$(PY) tools/demo.py --started_at $$start" && $(PY) tools/demo.py --started_at $$start

# Two pytest-xdist workers (the test machine has 2 cores; most tests keep one core busy), each
# taking whole files (module fixtures are built once). PYTEST_PARALLEL= runs in one process.
PYTEST_PARALLEL ?= -n 2 --dist loadfile
# Prints the 25 slowest tests, pytest's own total, then this target's total (setup and builds
# included); the exit status is pytest's.
test:
	@start=$$(date +%s) && $(MAKE) --no-print-directory setup onnx cuda-build && \
	$(MAKE) --no-print-directory lint && \
	tests=$$(date +%s) && echo "$(PY) -m pytest $(PYTEST_PARALLEL) -q --durations=25 -m 'not long' tests" && \
	{ $(PY) -m pytest $(PYTEST_PARALLEL) -q --durations=25 -m "not long" tests; rc=$$?; } && end=$$(date +%s) && \
	echo "make test total: $$((end - start)) s (setup and builds $$((tests - start)) s, pytest $$((end - tests)) s)" && \
	exit $$rc

# ruff (settings in pyproject.toml): the tree must be formatted and lint-clean; `make format` fixes
# the formatting.
lint: setup
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

format: setup
	$(VENV)/bin/ruff format .

test-fast: setup
	$(PY) -m pytest -q --durations=25 -m "not slow and not long" tests

# The long end-to-end checks (marker `long`) that `make test` leaves out: each has a shorter test
# in `make test` on the same code path (e.g. the R-50 oneDNN agreement at 800 x 1066; 480 x 640
# runs in `make test`).
test-long: setup onnx
	$(PY) -m pytest -q --durations=25 -m long tests

onnx: setup
	$(PIP) install -q -r requirements-onnx.txt

# --- CUDA -----------------------------------------------------------------------------------------
# `make cuda-build` compiles, without a GPU, with nvcc 13.0 from pip (requirements-cuda-build.txt):
#   - msda_cuda.cu (the kernels) for every arch in CUDA_ARCHS, plus PTX of the newest one for later
#     GPUs; warnings are errors; ptxas's register / spill figures are printed when it compiles;
#   - the Paddle binding ms_deform_attn_op.cc with PADDLE_WITH_CUDA (its GPU dispatch) against the
#     installed Paddle headers, and checks that every msda:: symbol it needs is defined;
#   - the standalone check program build/cuda/msda_gpu_check (kernels + CPU kernels + checks).
# `make gpu-check` runs that program (CUDA kernels vs CPU kernels); without a GPU it stops with
# one line saying so. On a GPU machine without network or Paddle, use the local toolkit:
#   make gpu-check NVCC=/usr/local/cuda/bin/nvcc [CUDA_ARCHS=native]
# (then only the kernels and the program are built). CUDA 13 targets sm_75 and newer; a V100
# (sm_70) needs a CUDA 12.x nvcc and CUDA_ARCHS=70.
CUDA_REQ      := requirements-cuda-build.txt
CUDA_STAMP    := $(VENV)/.cuda-installed
CUDA_ARCHS    ?= 75 80 86 89 90 100 120
CUDA_OUT      ?= build/cuda
CUDA_HOST_CXX ?= g++
ifdef NVCC
CUDA_TOOL     :=
CUDA_LDFLAGS  ?=
HOST_PYTHON   ?= python3
GPU_CHECK_DEPS = $(CUDA_OUT)/msda_gpu_check
else
NVCC          := $(VENV)/cuda/bin/nvcc
CUDA_TOOL     := $(CUDA_STAMP)
# The pip layout keeps libcudart_static.a in lib/; nvcc.profile only looks in lib64/.
CUDA_LDFLAGS  := -L$(VENV)/cuda/lib
HOST_PYTHON   := $(PY)
GPU_CHECK_DEPS = cuda-build
endif
ifeq ($(CUDA_ARCHS),native)
CUDA_GENCODE  := -arch=native
else
CUDA_GENCODE  := $(foreach a,$(CUDA_ARCHS),-gencode arch=compute_$(a),code=sm_$(a)) \
                 -gencode arch=compute_$(lastword $(CUDA_ARCHS)),code=compute_$(lastword $(CUDA_ARCHS))
endif
NVCC_FLAGS    := -std=c++17 -O3 -ccbin $(CUDA_HOST_CXX) -Werror all-warnings \
                 -Xcompiler -Wall,-Wextra,-Werror
NVCC_HOST     := $(NVCC_FLAGS) -x c++ -Xcompiler -fopenmp
CUDA_OBJS     := $(CUDA_OUT)/msda_cuda.o $(CUDA_OUT)/msda_cpu.o $(CUDA_OUT)/msda_cpu_avx2.o
KERNEL_DEPS   := $(addprefix $(OP_DIR)/,msda_common.h msda_cpu.h msda_cpu_impl.h msda_cuda.h) \
                 $(CUDA_OUT)/flags.txt

cuda-build: $(CUDA_OUT)/msda_gpu_check $(CUDA_OUT)/binding-symbols.ok

gpu-check: $(GPU_CHECK_DEPS)
	@$(CUDA_OUT)/msda_gpu_check $(GPU_CHECK_ARGS)

$(CUDA_STAMP): $(CUDA_REQ) | $(STAMP)
	$(PIP) install -q -r $(CUDA_REQ)
	ln -sfn "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/nvidia/cu13" $(VENV)/cuda
	$(VENV)/cuda/bin/nvcc --version | tail -n 1
	touch $@

# Rewritten only when the compiler or its flags change, so objects rebuild then and only then.
$(CUDA_OUT)/flags.txt: FORCE | $(CUDA_TOOL)
	@mkdir -p $(@D)
	@echo '$(NVCC) $(NVCC_FLAGS) $(CUDA_GENCODE)' | cmp -s - $@ || \
		echo '$(NVCC) $(NVCC_FLAGS) $(CUDA_GENCODE)' > $@

$(CUDA_OUT)/msda_cuda.o: $(OP_DIR)/msda_cuda.cu $(KERNEL_DEPS) | $(CUDA_TOOL)
	$(NVCC) $(NVCC_FLAGS) $(CUDA_GENCODE) -Xptxas -v -c $< -o $@ > $(CUDA_OUT)/ptxas.log 2>&1 || \
		{ cat $(CUDA_OUT)/ptxas.log; rm -f $@; exit 1; }
	$(HOST_PYTHON) $(OP_DIR)/ptxas_summary.py $(CUDA_OUT)/ptxas.log

$(CUDA_OUT)/%.o: $(OP_DIR)/%.cc $(KERNEL_DEPS) | $(CUDA_TOOL)
	$(NVCC) $(NVCC_HOST) -Xcompiler -fPIC -c $< -o $@

$(CUDA_OUT)/msda_gpu_check: $(OP_DIR)/msda_gpu_check.cu $(CUDA_OBJS) $(KERNEL_DEPS) | $(CUDA_TOOL)
	$(NVCC) $(NVCC_FLAGS) $(CUDA_GENCODE) -Xcompiler -fopenmp '-DMSDA_BUILT_ARCHS=$(CUDA_ARCHS)' \
		$< $(CUDA_OBJS) $(CUDA_LDFLAGS) -o $@

# The binding's CUDA branch: compiled as CUDAExtension compiles it (host compiler, PADDLE_WITH_CUDA),
# against the CPU wheel's headers (the same API headers as the GPU wheel's); not linked (the CPU
# libpaddle has no GPU parts). Then every msda:: symbol it uses must be defined by the kernels.
$(CUDA_OUT)/ms_deform_attn_op_cuda.o: $(OP_DIR)/ms_deform_attn_op.cc $(KERNEL_DEPS) $(STAMP) | $(CUDA_STAMP)
	inc="$$($(PY) -c 'import os, paddle; print(os.path.join(os.path.dirname(paddle.__file__), "include"))' 2>/dev/null)" && \
	test -d "$$inc/paddle" || { echo "no Paddle headers found under '$$inc' (import paddle in $(PY))"; exit 1; } && \
	$(CUDA_HOST_CXX) -std=c++17 -O1 -fPIC -c $< -o $@ -Wall -Wextra -Werror \
		-DPADDLE_WITH_CUDA -DEIGEN_USE_GPU -DPADDLE_WITH_CUSTOM_KERNEL -DPADDLE_NO_PYTHON \
		-isystem "$$inc" -isystem "$$inc/third_party" \
		-isystem $(VENV)/cuda/include -isystem $(VENV)/cuda/include/cccl

$(CUDA_OUT)/binding-symbols.ok: $(CUDA_OUT)/ms_deform_attn_op_cuda.o $(CUDA_OBJS)
	nm --undefined-only $< | awk '$$1 == "U" && $$2 ~ /4msda/ {print $$2}' | LC_ALL=C sort -u > $(CUDA_OUT)/binding-needs.txt
	nm --defined-only $(CUDA_OBJS) | awk '($$2 == "T" || $$2 == "W") && $$3 ~ /4msda/ {print $$3}' | LC_ALL=C sort -u > $(CUDA_OUT)/kernels-define.txt
	@test -s $(CUDA_OUT)/binding-needs.txt || { echo "no msda:: symbol referenced by $<"; exit 1; }
	@missing="$$(LC_ALL=C comm -23 $(CUDA_OUT)/binding-needs.txt $(CUDA_OUT)/kernels-define.txt)"; \
	if [ -n "$$missing" ]; then echo "ms_deform_attn_op.cc (CUDA) uses undefined kernel symbols:"; \
		echo "$$missing" | c++filt; exit 1; fi
	@echo "binding (PADDLE_WITH_CUDA): all $$(wc -l < $(CUDA_OUT)/binding-needs.txt) msda:: symbols it uses are defined"
	touch $@

FORCE:

clean:
	rm -rf $(VENV) build *.egg-info output
