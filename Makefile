# hybrid.cu build. Plain `make` builds every program this machine can build; `make test` builds and
# runs every test this machine can run (GPU tests only where a GPU is present).

# every core builds: the CUDA programs take most of a clean build
MAKEFLAGS += --jobs=$(shell nproc 2>/dev/null || echo 2)

CC ?= gcc
CFLAGS ?= -O3 -march=native
CFLAGS += -std=gnu11 -Wall -Wextra -Wno-unused-function
LDLIBS = -lm

# --- dependency checks, each reported as found / not found ---------------------------------
OPENMP := $(shell echo 'int main(void){return 0;}' | $(CC) -fopenmp -x c - -o /dev/null 2>/dev/null && echo yes)
ifeq ($(OPENMP),yes)
  CFLAGS += -fopenmp
  $(info ✓ OpenMP found: CPU loops run in parallel)
else
  $(info ✗ OpenMP not found: CPU loops run on one thread)
endif

# nvcc: from PATH, else $(CUDA_HOME)/bin. The CUDA programs build without a GPU present; their GPU
# tests then skip. GPU_ARCH targets Hopper (H100/H200) by default; override for other GPUs.
CUDA_HOME ?= /usr/local/cuda
NVCC ?= $(shell command -v nvcc 2>/dev/null || { test -x $(CUDA_HOME)/bin/nvcc && echo $(CUDA_HOME)/bin/nvcc; })
GPU_ARCH ?= -gencode=arch=compute_90a,code=sm_90a
NVCCFLAGS = -O3 -std=c++17 $(GPU_ARCH) -Xcompiler "-Wall -Wno-unused-function" --expt-relaxed-constexpr
ifeq ($(OPENMP),yes)
  NVCCFLAGS += -Xcompiler -fopenmp
  NVCC_LDLIBS = -lgomp
endif
# PRECISION: BF16 (default: bf16 activations and matmuls, fp32 master weights, optimizer state and
# statistics) or FP32 (the build diffed against the CPU reference at fp32 tolerances). Validated
# here so a typo is an error, not a silent fallback. The GPU tests are built in both precisions.
PRECISION ?= BF16
ifeq ($(filter $(PRECISION),BF16 FP32),)
  $(error PRECISION=$(PRECISION): expected BF16 or FP32)
endif
# Switching PRECISION rebuilds what it selects (train_hybrid, bench_step) without a make clean:
# build/precision holds the value of the last build and changes only when PRECISION does.
PRECISION_STAMP = build/precision
$(shell mkdir -p build; [ "$$(cat $(PRECISION_STAMP) 2>/dev/null)" = "$(PRECISION)" ] || echo $(PRECISION) > $(PRECISION_STAMP))
# NCCL: train_hybrid --gpus N (data parallel) is built when nccl.h is there, as llm.c does
NCCL_H := $(wildcard $(CUDA_HOME)/include/nccl.h /usr/include/nccl.h)
ifneq ($(NVCC),)
  $(info ✓ nvcc found: $(NVCC) (the CUDA programs take most of a build; `make NVCC=` leaves them out))
  ifneq ($(NCCL_H),)
    NCCL_FLAGS = -DMULTI_GPU
    NCCL_LIB = -lnccl
    $(info ✓ NCCL found: train_hybrid --gpus N trains data-parallel)
  else
    $(info ✗ NCCL not found: train_hybrid trains on one GPU)
  endif
  GPU_PROGRAMS = train_hybrid dev/bench/bench_step dev/cuda/attention dev/cuda/delta_rule
  GPU_TESTS = test/test_gpu test/test_gpu_bf16 test/test_model_gpu test/test_model_gpu_bf16
else
  $(info ✗ nvcc not found (set CUDA_HOME): CUDA programs and GPU tests are not built)
endif

CPU_PROGRAMS = train_cpu eval_needle dev/experiments/needle_share
CPU_HEADERS = utils.h dataloader.h hybrid_cpu.h needle_eval.h checkpoint.h flags.h train_common.h
GPU_HEADERS = cuda_common.cuh hopper.cuh full_attn.cuh attention_swa.cuh recurrent_mixer.cuh $(wildcard kernels/*.cuh) $(CPU_HEADERS)
CPU_TESTS = test/test_grad test/test_cpu test/test_recall
TEST_TOOLS = test/ckpt_edit

# AddressSanitizer + UndefinedBehaviorSanitizer builds of the CPU programs and tests, in build/sanitize/
# (-O1 -g, every report fatal): make test runs the fuzz and bad-input tests on them, make sanitize
# every CPU test. Leaks at exit are not checked: the programs exit through die() holding their buffers.
SAN_DIR = build/sanitize
SAN_CFLAGS = $(filter-out -O3 -march=native,$(CFLAGS)) -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all
SAN_PROGRAMS = $(SAN_DIR)/train_cpu $(SAN_DIR)/eval_needle $(SAN_DIR)/test/test_cpu $(SAN_DIR)/test/test_grad $(SAN_DIR)/test/test_fuzz $(SAN_DIR)/test/ckpt_edit
export ASAN_OPTIONS = detect_leaks=0

.PHONY: all test sanitize clean
all: $(CPU_PROGRAMS) $(GPU_PROGRAMS) $(CPU_TESTS) $(TEST_TOOLS) $(GPU_TESTS)

train_cpu: dev/train_cpu.c $(CPU_HEADERS)
	$(CC) $(CFLAGS) -o $@ $< $(LDLIBS)

eval_needle: eval_needle.c $(CPU_HEADERS)
	$(CC) $(CFLAGS) -o $@ $< $(LDLIBS)

# the share of training questions inside an SWA window (finding 2), measured on the generator
dev/experiments/needle_share: dev/experiments/needle_share.c $(CPU_HEADERS)
	$(CC) $(CFLAGS) -o $@ $< $(LDLIBS)

# the gradient checks build the reference with real = double
test/test_grad: test/test_grad.c test/test_common.h $(CPU_HEADERS)
	$(CC) $(CFLAGS) -o $@ $< $(LDLIBS)

# test_cpu also runs ./eval_needle
test/test_cpu: test/test_cpu.c test/test_common.h test/test_ckpt.h $(CPU_HEADERS) eval_needle
	$(CC) $(CFLAGS) -o $@ $< $(LDLIBS)

# the recall task, its eval and the interventions; also runs ./eval_needle
test/test_recall: test/test_recall.c test/test_recall.h test/test_common.h $(CPU_HEADERS) eval_needle
	$(CC) $(CFLAGS) -o $@ $< $(LDLIBS)

# edits and reseals a checkpoint for the shell tests
test/ckpt_edit: test/ckpt_edit.c test/test_ckpt.h $(CPU_HEADERS)
	$(CC) $(CFLAGS) -o $@ $< $(LDLIBS)

$(SAN_DIR)/train_cpu: dev/train_cpu.c $(CPU_HEADERS)
	@mkdir -p $(@D)
	$(CC) $(SAN_CFLAGS) -o $@ $< $(LDLIBS)
$(SAN_DIR)/eval_needle: eval_needle.c $(CPU_HEADERS)
	@mkdir -p $(@D)
	$(CC) $(SAN_CFLAGS) -o $@ $< $(LDLIBS)
$(SAN_DIR)/test/%: test/%.c test/test_common.h test/test_ckpt.h test/test_recall.h $(CPU_HEADERS)
	@mkdir -p $(@D)
	$(CC) $(SAN_CFLAGS) -o $@ $< $(LDLIBS)

# the GPU tests: <name> is the FP32 build, <name>_bf16 the BF16 build of the same source
test/test_gpu test/test_gpu_bf16: test/test_gpu.cu test/test_common.h test/test_gpu_common.cuh $(GPU_HEADERS)
	$(NVCC) $(NVCCFLAGS) -DPRECISION_$(if $(findstring bf16,$@),BF16,FP32) -o $@ $< $(NVCC_LDLIBS) -lm

train_hybrid: train_hybrid.cu $(GPU_HEADERS) $(PRECISION_STAMP)
	$(NVCC) $(NVCCFLAGS) $(NCCL_FLAGS) -DPRECISION_$(PRECISION) -o $@ $< $(NVCC_LDLIBS) -lcublas $(NCCL_LIB) -lm

# step and kernel speed against the targets of dev/bench/README.md; includes train_hybrid.cu with TESTING
dev/bench/bench_step: dev/bench/bench_step.cu test/test_gpu_common.cuh train_hybrid.cu $(GPU_HEADERS) $(PRECISION_STAMP)
	$(NVCC) $(NVCCFLAGS) $(NCCL_FLAGS) -DPRECISION_$(PRECISION) -o $@ $< $(NVCC_LDLIBS) -lcublas $(NCCL_LIB) -lm

# standalone attention kernel versions (llm.c dev/cuda style): CPU check and timing
dev/cuda/attention: dev/cuda/attention.cu test/test_gpu_common.cuh $(GPU_HEADERS)
	$(NVCC) $(NVCCFLAGS) -o $@ $< $(NVCC_LDLIBS) -lm

# standalone recurrent-mixer versions (token by token, chunk-parallel): CPU check and timing
dev/cuda/delta_rule: dev/cuda/delta_rule.cu test/test_gpu_common.cuh $(GPU_HEADERS)
	$(NVCC) $(NVCCFLAGS) -o $@ $< $(NVCC_LDLIBS) -lm

# the whole model on the GPU against the CPU reference; includes train_hybrid.cu with TESTING
test/test_model_gpu test/test_model_gpu_bf16: test/test_model_gpu.cu test/test_common.h test/test_gpu_common.cuh test/test_recall.h train_hybrid.cu $(GPU_HEADERS)
	$(NVCC) $(NVCCFLAGS) $(NCCL_FLAGS) -DPRECISION_$(if $(findstring bf16,$@),BF16,FP32) -o $@ $< $(NVCC_LDLIBS) -lcublas $(NCCL_LIB) -lm

# the fuzz and bad-input tests run on the sanitizer builds
test: $(CPU_PROGRAMS) $(GPU_PROGRAMS) $(CPU_TESTS) $(TEST_TOOLS) $(GPU_TESTS) $(SAN_PROGRAMS)
	@bash test/run.sh $(CPU_TESTS) $(SAN_DIR)/test/test_fuzz test/test_bad_input.sh test/test_plot.sh test/test_resume.sh test/test_experiments.sh test/test_multigpu.sh $(GPU_TESTS)

# Every CPU test on the AddressSanitizer + UBSan builds; then, where there is a GPU, compute-sanitizer
# over the GPU tests (small shapes): memcheck on every kernel and the whole model, racecheck
# (shared-memory hazards) on the attention and recurrent-mixer kernels.
SANITIZE = compute-sanitizer --error-exitcode 1 --print-limit 20
sanitize: $(SAN_PROGRAMS) $(CPU_PROGRAMS) $(TEST_TOOLS) $(if $(NVCC),test/test_gpu test/test_gpu_bf16 test/test_model_gpu)
	@bash test/run.sh $(SAN_DIR)/test/test_cpu $(SAN_DIR)/test/test_grad $(SAN_DIR)/test/test_fuzz test/test_bad_input.sh
	@if nvidia-smi -L > /dev/null 2>&1; then \
	    $(SANITIZE) --tool memcheck ./test/test_gpu && $(SANITIZE) --tool memcheck ./test/test_gpu_bf16 && \
	    $(SANITIZE) --tool memcheck ./test/test_model_gpu && $(SANITIZE) --tool racecheck ./test/test_gpu && \
	    $(SANITIZE) --tool racecheck ./test/test_gpu_bf16 && echo "make sanitize: memcheck and racecheck clean"; \
	else echo "make sanitize: no CUDA GPU here, so compute-sanitizer did not run (the CPU part above did)"; fi

clean:
	rm -f $(CPU_PROGRAMS) $(GPU_PROGRAMS) $(CPU_TESTS) $(TEST_TOOLS) $(GPU_TESTS)
	rm -rf build
