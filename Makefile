# cgunicorn build. `make` builds build/cgunicorn; `make run` serves the example;
# `make check` runs every test. Debian packages and the test virtualenv are
# installed by the build itself when missing.

BUILD ?= build
# configure's output: the source directory's when a user ran ./configure
# there (it then serves the default build directory), else the build
# directory's, which make writes by running configure there.
CONFIG_MK := $(firstword $(if $(filter build,$(BUILD)),$(wildcard config.mk)) $(BUILD)/config.mk)
-include $(CONFIG_MK)

# Source directories, lowest layer first (docs/architecture.md).
SRC_DIRS := core config http server server/embed server/wsgi server/asgi server/workers dirty

LLHTTP_SRC := /usr/share/llhttp
LLHTTP_INC := /usr/share/include/llhttp
# snprintf truncation is how we bound strings on purpose, so that warning is off.
WARN := -Wall -Wextra -Werror -Wno-format-truncation
CFLAGS_COMMON := -std=c11 -D_GNU_SOURCE -DCG_PYTHON_BASE=\"$(PYTHON_BASE)\" -DCG_VERSION=\"$(CG_VERSION)\" \
	-g -O2 $(WARN) -fno-strict-aliasing -I. $(addprefix -I,$(SRC_DIRS)) -I$(BUILD)/gen \
	$(PY_CFLAGS) $(LIB_CFLAGS)
ifeq ($(ASAN),1)
SAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer
CFLAGS_COMMON += -O1 $(SAN_FLAGS)
LDFLAGS_SAN := $(SAN_FLAGS)
endif
LIBS := $(LIB_LIBS) -lpthread $(PY_LDFLAGS)

# EXCLUDE (patterns) leaves sources out, e.g. a half-written file during development.
SRC := $(filter-out $(EXCLUDE),$(sort $(foreach d,$(SRC_DIRS),$(wildcard $(d)/*.c))))
LIB_SRC := $(filter-out server/cg_main.c,$(SRC))
OBJ := $(patsubst %.c,$(BUILD)/obj/%.o,$(LIB_SRC))
GEN_SRC := $(BUILD)/gen/cg_pysrc.c
GEN_OBJ := $(BUILD)/obj/gen/cg_pysrc.o
PY_SRC := $(shell find dirty/py server/py -name '*.py' 2>/dev/null | sort)
# llhttp is the framing oracle of the differential fuzzer (fuzz/), linked
# into the fuzz targets only: the server parses with its own http/ code.
LLHTTP_LIB := $(BUILD)/llhttp/libllhttp.a
LIBCG := $(BUILD)/libcg.a
BIN := $(BUILD)/cgunicorn

UNIT_SRC := $(sort $(wildcard tests/unit/*/test_*.c))
UNIT_BIN := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRC))

VENV := .venv
VENV_STAMP := $(VENV)/.stamp
PYTEST_ARGS ?=

.PHONY: all deps run corpus check check-unit check-integration check-conformance check-asan \
	docs clean distclean bench bench-quick bench-profile fuzz install uninstall dist

all: $(BIN)

deps:
	@sh mk/deps.sh

# configure is generated from configure.ac (release tarballs carry it).
configure: configure.ac
	@sh mk/deps.sh
	autoreconf -fi

# PYTHON=PATH picks the interpreter to embed; CONFIGURE_FLAGS passes more.
$(BUILD)/config.mk: configure mk/config.mk.in
	@sh mk/deps.sh
	@mkdir -p $(BUILD)
	cd $(BUILD) && $(abspath configure) $(if $(filter 1,$(ASAN)),--enable-asan) \
		$(if $(PYTHON),--with-python=$(PYTHON)) $(CONFIGURE_FLAGS)

$(LLHTTP_LIB): | $(CONFIG_MK)
	@mkdir -p $(BUILD)/llhttp
	@for f in api http llhttp; do \
		$(CC) -O2 -g -fPIC $(SAN_FLAGS) \
			-I$(LLHTTP_INC) -c $(LLHTTP_SRC)/$$f.c -o $(BUILD)/llhttp/$$f.o || exit 1; done
	ar rcs $@ $(BUILD)/llhttp/api.o $(BUILD)/llhttp/http.o $(BUILD)/llhttp/llhttp.o

$(GEN_SRC): mk/pysrc.py $(PY_SRC) | $(CONFIG_MK)
	@mkdir -p $(dir $@)
	$(PYTHON_BASE) mk/pysrc.py $@ dirty/py server/py

$(BUILD)/obj/%.o: %.c | $(CONFIG_MK)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_COMMON) -MMD -MP -c $< -o $@

$(GEN_OBJ): $(GEN_SRC)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_COMMON) -c $< -o $@

$(LIBCG): $(OBJ) $(GEN_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BIN): $(BUILD)/obj/server/cg_main.o $(LIBCG)
	$(CC) $(LDFLAGS_SAN) -o $@ $^ $(LIBS)

$(BUILD)/tests/%: tests/unit/%.c tests/unit/cg_test.h $(LIBCG)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_COMMON) -Itests/unit -o $@ $< $(LIBCG) $(LDFLAGS_SAN) $(LIBS)

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)

$(VENV_STAMP): requirements-test.txt | $(CONFIG_MK)
	@test -x $(VENV)/bin/python || $(PYTHON_BASE) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --disable-pip-version-check -r requirements-test.txt
	@touch $@

venv: $(VENV_STAMP)

run: $(BIN)
	cd examples && ../$(BIN) --bind 127.0.0.1:8000 app:app \
		--dirty-app dirty_app:MLApp --dirty-app dirty_app:ComputeApp --dirty-workers 2

# gunicorn's request corpus, converted from the pinned upstream sdist
# (mk/corpus.py; the sdist is fetched with pip and checked against
# conformance/upstream-gunicorn.sha256). The suites read it from here.
CORPUS_DIR := $(abspath $(BUILD))/corpus/http-requests
CORPUS_STAMP := $(CORPUS_DIR)/.stamp
$(CORPUS_STAMP): mk/corpus.py conformance/upstream-gunicorn.sha256 $(VENV_STAMP)
	$(VENV)/bin/python mk/corpus.py $(CORPUS_DIR) --cache $(abspath $(BUILD))/upstream
	@touch $@

corpus: $(CORPUS_STAMP)

check-unit: $(UNIT_BIN) $(CORPUS_STAMP)
	@CG_HTTP_CORPUS=$(CORPUS_DIR) sh mk/run-unit.sh $(UNIT_BIN)

check-integration: $(BIN) $(VENV_STAMP) $(CORPUS_STAMP)
	CGUNICORN=$(abspath $(BIN)) CG_HTTP_CORPUS=$(CORPUS_DIR) $(VENV)/bin/python -m pytest -q -p no:cacheprovider \
		tests/integration conformance $(PYTEST_ARGS)

check: all check-unit check-fuzz check-integration

# The sanitizer build runs the same tests. SEGV is left to the kernel (tests
# kill dirty workers with it on purpose); leaks inside the interpreter are
# suppressed (mk/lsan.supp), ours are reported. A small quarantine keeps
# freed memory from inflating RSS, which one test bounds (1 GiB stream).
check-asan:
	ASAN_OPTIONS=handle_segv=0:detect_leaks=1:quarantine_size_mb=8:thread_local_quarantine_size_kb=64 \
	LSAN_OPTIONS=suppressions=$(abspath mk/lsan.supp):print_suppressions=0 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	$(MAKE) BUILD=build-asan ASAN=1 check

# `./configure --prefix=DIR` (default /usr/local) or `make prefix=DIR`;
# DESTDIR stages the install for packagers.
install: $(BIN)
	install -D -m 755 $(BIN) $(DESTDIR)$(bindir)/cgunicorn

uninstall:
	rm -f $(DESTDIR)$(bindir)/cgunicorn

# The release tarball, which is also the Python sdist (mk/cgunicorn_build.py):
# the tracked files plus the generated configure; it builds with no network.
dist: configure
	$(or $(PYTHON_BASE),python3) mk/cgunicorn_build.py sdist $(BUILD)

docs: $(BIN)
	$(BIN) --print-settings-doc > docs/settings.md

clean:
	rm -rf $(BUILD) build-asan

distclean: clean
	rm -rf $(VENV) config.mk config.status config.log configure aclocal.m4 autom4te.cache

include mk/fuzz.mk

# Benchmark (bench/README.md). Installs wrk, nginx and the peers itself; a
# cgunicorn that does not build or serve yet shows as "not available yet".
BENCH_PY := bench/.venv/bin/python
.PHONY: bench-setup
bench-setup:
	@$(MAKE) --no-print-directory all || echo "bench: cgunicorn did not build; its rows will say so"
	@sh bench/setup.sh $(or $(PYTHON_BASE),python3)

bench: bench-setup
	$(BENCH_PY) bench/run.py

bench-quick: bench-setup
	$(BENCH_PY) bench/run.py --quick

bench-profile: bench-setup
	$(BENCH_PY) bench/profile.py
