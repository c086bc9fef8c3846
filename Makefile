# Quark: `make run` builds and serves with the samples deployed; `make test` runs every test.
# Each target installs what it needs and says what it is doing.

CARGO        ?= cargo
WASM_TARGET  := wasm32-wasip2
SAMPLES      := counter greeter bank accounts-summary reports transfer shop order-saga approval fan-out
TEST_ACTORS  := misbehave pingpong no-handler counter-v2 ledger worker courier polyglot register chat wf-probe wf-probe-v2
# Guests in other languages: a folder with app.py / app.js each.
PY_SAMPLES   := counter-py order-saga-py
JS_SAMPLES   := counter-js approval-js
PY_TEST_ACTORS := polyglot-py account-py
# The ones `make run` builds and deploys (each costs seconds to build and
# to compile at the first start); the workflow samples in Python and
# JavaScript are built by `make samples` and `make test`.
RUN_PY       := counter-py
RUN_JS       := counter-js
JS_TEST_ACTORS := polyglot-js account-js
GUEST_DIR    := target/$(WASM_TARGET)/wasm
DATA_DIR     ?= ./quark-data
LISTEN       ?= 127.0.0.1:7878

.PHONY: run test samples guests run-guests rust-guests py-guests js-guests bench toolchain check clean-data

toolchain:
	@if ! rustup target list --installed 2>/dev/null | grep -qx $(WASM_TARGET); then \
		echo ">> installing the Rust target $(WASM_TARGET) (rustup target add $(WASM_TARGET))"; \
		rustup target add $(WASM_TARGET); \
	fi

guests: rust-guests py-guests js-guests

# Every Rust guest (samples and test actors) in ONE cargo build, then copied out.
rust-guests: toolchain
	@echo ">> building guest components for $(WASM_TARGET): $(SAMPLES) $(TEST_ACTORS)"
	$(CARGO) build --profile wasm --target $(WASM_TARGET) $(addprefix -p ,$(SAMPLES) $(TEST_ACTORS))
	@mkdir -p target/samples target/test-actors
	@for n in $(SAMPLES); do cp $(GUEST_DIR)/$$(echo $$n | tr - _).wasm target/samples/$$n.wasm; done
	@for n in $(TEST_ACTORS); do cp $(GUEST_DIR)/$$(echo $$n | tr - _).wasm target/test-actors/$$n.wasm; done
	@echo ">> components: $$(ls target/samples/*.wasm target/test-actors/*.wasm | tr '\n' ' ')"

# Python guests: componentize-py, installed on first use into
# guest-sdk/python/.venv; SKIP (not an error) when it cannot be installed.
py-guests:
	@for n in $(PY_SAMPLES); do bash guest-sdk/python/build.sh samples/$$n target/samples/$$n.wasm || exit 1; done
	@for n in $(PY_TEST_ACTORS); do bash guest-sdk/python/build.sh tests/actors/$$n target/test-actors/$$n.wasm || exit 1; done

# JavaScript guests: componentize-js, installed on first use into
# guest-sdk/js/node_modules; SKIP (not an error) when it cannot be installed.
js-guests:
	@for n in $(JS_SAMPLES); do bash guest-sdk/js/build.sh samples/$$n target/samples/$$n.wasm || exit 1; done
	@for n in $(JS_TEST_ACTORS); do bash guest-sdk/js/build.sh tests/actors/$$n target/test-actors/$$n.wasm || exit 1; done

samples: guests

# What `make run` serves: every Rust guest, and RUN_PY / RUN_JS.
run-guests: rust-guests
	@for n in $(RUN_PY); do bash guest-sdk/python/build.sh samples/$$n target/samples/$$n.wasm || exit 1; done
	@for n in $(RUN_JS); do bash guest-sdk/js/build.sh samples/$$n target/samples/$$n.wasm || exit 1; done

run: run-guests
	@echo ">> building the host (release; the first build compiles wasmtime and takes several minutes, later ones seconds)"
	$(CARGO) build --release -p quark
	@echo ">> starting quark serve on $(LISTEN), data in $(DATA_DIR), samples deployed"
	@echo "   (the first start compiles the Python and JavaScript samples, about half a minute; later starts load them from $(DATA_DIR)/compiled)"
	./target/release/quark serve --data-dir $(DATA_DIR) --listen $(LISTEN) \
		$(foreach s,$(SAMPLES),--deploy $(s)=target/samples/$(s).wasm) \
		$(foreach s,$(RUN_PY) $(RUN_JS),$(if $(wildcard target/samples/$(s).wasm),--deploy $(s)=target/samples/$(s).wasm)) \
		--projection accounts-summary=bank:accounts-summary/all

# The tests build in the release profile, like `make run`: after one, the
# other reuses every compiled dependency instead of building them all again
# in a second profile (and target/ holds one copy, not two). Every test is
# in the one `tests/all` binary (package `quark-tests`, compiled
# unoptimised: it is glue, and builds in a fraction of the time), so the
# library is not compiled a second time as a unit-test harness. The CLI
# tests run the `quark` binary built first. (CI also builds the benchmark.)
test: guests
	@echo ">> running the tests (release build shared with make run; integration, storage conformance on SQLite, PostgreSQL and Redis, Python and JavaScript guests)"
	$(CARGO) build --release -p quark --bin quark
	$(CARGO) test --release -p quark-tests --test all

# Lints, as CI runs them: clippy on every host crate, the tests and the benchmark, warnings as errors.
check:
	@echo ">> clippy on quark-core, quark-store, quark-runtime, quark-cluster, quark and quark-tests (all targets, warnings are errors)"
	$(CARGO) clippy -p quark-core -p quark-store -p quark-runtime -p quark-cluster -p quark -p quark-tests --all-targets -- -D warnings

bench: guests
	@echo ">> building and running the benchmarks (release)"
	$(CARGO) build --release -p quark --bins --examples
	./target/release/examples/bench
	@echo ">> HTTP load with wrk against a release host"
	bash bench/http.sh

clean-data:
	rm -rf $(DATA_DIR)
