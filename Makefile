# trading_shared: the commands of README.md. Every target installs what it needs first.
SHELL := /bin/bash
BUILD_DIR ?= build
ASAN_DIR ?= build-asan
JOBS ?= 2
BUILD_TYPE ?= RelWithDebInfo
CTEST_ARGS ?=
# Fuzzing (fuzz/, clang + libFuzzer): seconds per target in `make test` and in `make fuzz`.
FUZZ_DIR ?= build-fuzz
FUZZ_TEST_SECONDS ?= 10
FUZZ_SECONDS ?= 600
# make bench ONLY=pg (a group) or ONLY=P1,P3 (figures); empty: everything.
ONLY ?=

.PHONY: all deps configure build test bench sanitize fuzz soak format format-check tidy clean demo \
  demo-tls

all: build

deps:
	@scripts/install-deps

$(BUILD_DIR)/build.ninja: | deps
	cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE)

configure: deps $(BUILD_DIR)/build.ninja

build: configure
	cmake --build $(BUILD_DIR) -j $(JOBS)

# Every ctest label (unit, integration, fault, e2e), then each fuzz target for a short run on
# its committed seeds (fuzz/run prints one FUZZ line per target; a finding fails the target).
test: build
	ctest --test-dir $(BUILD_DIR) --output-on-failure -j $(JOBS) $(CTEST_ARGS)
	fuzz/run --seconds $(FUZZ_TEST_SECONDS) --build-dir $(FUZZ_DIR) --jobs $(JOBS)

# Each fuzz target for FUZZ_SECONDS (default 10 minutes), one after the other; working corpora
# and reproducers stay in $(FUZZ_DIR). One target: make fuzz FUZZ_TARGETS=resp.
FUZZ_TARGETS ?=
fuzz: deps
	fuzz/run --seconds $(FUZZ_SECONDS) --build-dir $(FUZZ_DIR) --jobs $(JOBS) $(FUZZ_TARGETS)

# Benchmarks and their anchors in one run, on throwaway servers (docs/performance.md):
# prints BENCH/RATIO lines and writes them to $(BUILD_DIR)/bench/results.tsv.
bench: build
	/usr/bin/python3 bench/run-bench --build-dir $(BUILD_DIR) --only "$(ONLY)"

# The whole pipeline on throwaway servers for 40 s with three faults: Redis restarted at 10 s,
# ts-receiver killed (SIGKILL) at 18 s and started again 10 s later, the venue dropping the
# receiver's connection at 32 s; the venue keeps trading meanwhile and the receiver repairs the
# tape from its REST endpoint. Prints the report (trades sent / persisted / lost / duplicated,
# backfilled, orders, latency, faults) and exits 0 only when every id from first to last is in
# ticks once with every field as sent. A progress line every 5 s; the JSON report (with the
# per-second series) in $(BUILD_DIR)/demo-report.json, the HTML report with the charts in
# $(BUILD_DIR)/demo-report.html. Extra flags: make demo DEMO_ARGS="--keep-dir".
demo: configure
	cmake --build $(BUILD_DIR) -j $(JOBS) --target ts-pipeline
	$(BUILD_DIR)/tests/e2e/ts-pipeline --duration 40s --restart-redis-at 10s \
	  --kill-receiver-at 18s --receiver-down 10s --drop-feed-at 32s --progress-every 5s \
	  --report-file $(BUILD_DIR)/demo-report.json --report-html $(BUILD_DIR)/demo-report.html \
	  $(DEMO_ARGS)

# `make demo` with TLS on every link (Redis rediss://, PostgreSQL sslmode=verify-full, the
# feed wss:// and https://, a throwaway CA) and each service as its own Redis ACL user and
# PostgreSQL role (ts-pipeline --tls).
demo-tls:
	$(MAKE) demo DEMO_ARGS="--tls $(DEMO_ARGS)"

# The pipeline of `make demo` for 20 minutes at 2000 trades/s under random faults (server
# restarts, SIGSTOP/SIGCONT, connection kills), a sample line every minute (rows, duplicates,
# holes, each service's RSS and descriptors) and a verdict on growth after the warm-up; exit 0
# only when nothing was lost or duplicated and nothing grew. A progress line every 5 s; reports
# in $(BUILD_DIR)/soak-report.json and soak-report.html. Not part of CI (docs/testing.md).
# Other seed or duration: make soak SOAK_ARGS="--seed 7 --duration 5m".
SOAK_ARGS ?=
soak: configure
	cmake --build $(BUILD_DIR) -j $(JOBS) --target ts-pipeline
	$(BUILD_DIR)/tests/e2e/ts-pipeline --duration 20m --rate 2000 --faults-every 30s \
	  --monitor-every 60s --stream-maxlen 100000 --seed 1 --progress-every 5s \
	  --report-file $(BUILD_DIR)/soak-report.json --report-html $(BUILD_DIR)/soak-report.html \
	  $(SOAK_ARGS)

# The same suites (unit, integration, fault, e2e, ops) under AddressSanitizer + UndefinedBehaviorSanitizer
# (LeakSanitizer included); CI runs it after `make test`. No benchmarks in this build, and not the
# `install` label: install.package only installs and compiles examples/ (it runs nothing a
# sanitizer could check), and `make test` runs it; here it took 29.5 s at the end of CI's run.
sanitize: deps
	cmake -S . -B $(ASAN_DIR) -G Ninja -DCMAKE_BUILD_TYPE=Debug -DTS_SANITIZE=ON -DTS_BUILD_BENCH=OFF
	cmake --build $(ASAN_DIR) -j $(JOBS)
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --test-dir $(ASAN_DIR) --output-on-failure -j $(JOBS) -LE '^install$$' $(CTEST_ARGS)

SOURCES = $(shell git ls-files '*.cpp' '*.hpp')

format: deps
	clang-format -i $(SOURCES)

format-check: deps
	clang-format --dry-run --Werror $(SOURCES)

tidy: configure
	clang-tidy -p $(BUILD_DIR) --quiet $(filter %.cpp,$(SOURCES))

clean:
	rm -rf $(BUILD_DIR) $(ASAN_DIR) $(FUZZ_DIR)
