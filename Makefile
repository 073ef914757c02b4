# hybrid.cu build. Plain `make` builds every program this machine can build; `make test` builds and
# runs every test this machine can run (GPU tests only where a GPU is present).

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

CPU_PROGRAMS = train_cpu
CPU_TESTS = test/test_grad test/test_cpu

.PHONY: all test clean
all: $(CPU_PROGRAMS) $(CPU_TESTS)

train_cpu: dev/train_cpu.c hybrid_cpu.h dataloader.h
	$(CC) $(CFLAGS) -o $@ $< $(LDLIBS)

# the gradient checks build the reference with real = double
test/test_grad: test/test_grad.c test/test_common.h hybrid_cpu.h dataloader.h
	$(CC) $(CFLAGS) -o $@ $< $(LDLIBS)

test/test_cpu: test/test_cpu.c test/test_common.h hybrid_cpu.h dataloader.h
	$(CC) $(CFLAGS) -o $@ $< $(LDLIBS)

test: $(CPU_TESTS)
	@bash test/run.sh $(CPU_TESTS)

clean:
	rm -f $(CPU_PROGRAMS) $(CPU_TESTS)
