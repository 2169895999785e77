# Fuzzing (fuzz/README.md). `make fuzz` builds each libFuzzer target with
# clang and runs it for FUZZ_SECONDS, printing one line per target;
# `make fuzz-merge` minimizes the working corpora back into fuzz/corpus/.
# `make check` replays fuzz/corpus and fuzz/regress through the same targets
# built with the ordinary compiler (check-fuzz-replay), and runs a short
# `make fuzz` smoke pass when clang is there.

FUZZ_TARGETS := http_parser http_proxy http_diff ws_frame dirty_codec dirty_json
FUZZ_SECONDS ?= 60
FUZZ_CC ?= clang
FUZZ_DIR := $(BUILD)/fuzz
FUZZ_FLAGS := -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer-no-link,address,undefined \
	-fno-sanitize-recover=undefined
FUZZ_CFLAGS := -std=c11 -D_GNU_SOURCE -I. $(addprefix -I,$(SRC_DIRS)) -Ifuzz \
	-I$(LLHTTP_INC) $(PY_CFLAGS) $(FUZZ_FLAGS)
# The sources each target needs (cg_err is the base layer's, core/):
FUZZ_ERR_SRC := core/cg_err.c
FUZZ_HTTP_SRC := $(sort $(wildcard http/*.c)) $(FUZZ_ERR_SRC)
FUZZ_DIRTY_SRC := dirty/cg_dirty_codec.c dirty/cg_dirty_json.c $(FUZZ_ERR_SRC)
FUZZ_LIBS := $(LIB_LIBS) $(PY_LDFLAGS)
fuzz_src_http_parser := $(FUZZ_HTTP_SRC)
fuzz_src_http_proxy := $(FUZZ_HTTP_SRC)
fuzz_src_http_diff := $(FUZZ_HTTP_SRC) $(LLHTTP_SRC)/api.c $(LLHTTP_SRC)/http.c $(LLHTTP_SRC)/llhttp.c
fuzz_src_ws_frame := http/cg_ws_frame.c
fuzz_src_dirty_codec := $(FUZZ_DIRTY_SRC)
fuzz_src_dirty_json := $(FUZZ_DIRTY_SRC)

FUZZ_BINS := $(patsubst %,$(FUZZ_DIR)/fuzz_%,$(FUZZ_TARGETS))
REPLAY_BINS := $(patsubst %,$(FUZZ_DIR)/replay_%,$(FUZZ_TARGETS))

.PHONY: fuzz fuzz-build fuzz-merge check-fuzz check-fuzz-replay check-fuzz-smoke

fuzz-build: $(FUZZ_BINS)

# One clang invocation per target: the sources are few and small, and each
# target gets its own coverage instrumentation of exactly what it tests.
$(FUZZ_DIR)/fuzz_%: fuzz/fuzz_%.c fuzz/*.h $(FUZZ_HTTP_SRC) $(FUZZ_DIRTY_SRC) | $(CONFIG_MK)
	@mkdir -p $(FUZZ_DIR)
	@command -v $(FUZZ_CC) >/dev/null || { echo "fuzz: $(FUZZ_CC) not found; apt-get install -y clang libclang-rt-14-dev (mk/deps.sh does)" >&2; exit 1; }
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $< $(fuzz_src_$*) $(FUZZ_LIBS)

# The same targets as plain programs, for replaying inputs in `make check`.
$(FUZZ_DIR)/replay_%: fuzz/fuzz_%.c fuzz/standalone_main.c fuzz/*.h $(LIBCG) $(LLHTTP_LIB)
	@mkdir -p $(FUZZ_DIR)
	$(CC) $(CFLAGS_COMMON) -Ifuzz -I$(LLHTTP_INC) -o $@ $< fuzz/standalone_main.c $(LIBCG) $(LLHTTP_LIB) \
		$(LDFLAGS_SAN) $(LIBS)

fuzz: fuzz-build
	@sh mk/fuzz-run.sh "$(FUZZ_DIR)" "$(FUZZ_SECONDS)" "$(BUILD)" $(FUZZ_TARGETS)

fuzz-merge: fuzz-build
	@sh mk/fuzz-run.sh --merge "$(FUZZ_DIR)" 0 "$(BUILD)" $(FUZZ_TARGETS)

check-fuzz-replay: $(REPLAY_BINS)
	@for t in $(FUZZ_TARGETS); do \
		out=$$($(FUZZ_DIR)/replay_$$t fuzz/corpus/$$t fuzz/regress/$$t) || { echo "fuzz replay $$t: FAILED"; exit 1; }; \
		echo "fuzz replay $$t: $$out"; done

# A short pass of every target (not the campaign): the targets build and
# run, and the committed corpora hold no crash under libFuzzer's sanitizers.
check-fuzz-smoke:
	@$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=$(or $(FUZZ_SMOKE_SECONDS),5)

check-fuzz: check-fuzz-replay check-fuzz-smoke
