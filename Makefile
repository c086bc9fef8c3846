# Quark: `make run` builds and serves with the samples deployed; `make test` runs every test.
# Each target installs what it needs and says what it is doing.

CARGO        ?= cargo
WASM_TARGET  := wasm32-wasip2
SAMPLES      := counter greeter bank accounts-summary reports transfer
TEST_ACTORS  := misbehave pingpong no-handler counter-v2 ledger worker courier
GUEST_DIR    := target/$(WASM_TARGET)/wasm
DATA_DIR     ?= ./quark-data
LISTEN       ?= 127.0.0.1:7878

.PHONY: run test samples guests bench toolchain check clean-data

toolchain:
	@if ! rustup target list --installed 2>/dev/null | grep -qx $(WASM_TARGET); then \
		echo ">> installing the Rust target $(WASM_TARGET) (rustup target add $(WASM_TARGET))"; \
		rustup target add $(WASM_TARGET); \
	fi

# Every guest (samples and test actors) in ONE cargo build, then copied out.
guests: toolchain
	@echo ">> building guest components for $(WASM_TARGET): $(SAMPLES) $(TEST_ACTORS)"
	$(CARGO) build --profile wasm --target $(WASM_TARGET) $(addprefix -p ,$(SAMPLES) $(TEST_ACTORS))
	@mkdir -p target/samples target/test-actors
	@for n in $(SAMPLES); do cp $(GUEST_DIR)/$$(echo $$n | tr - _).wasm target/samples/$$n.wasm; done
	@for n in $(TEST_ACTORS); do cp $(GUEST_DIR)/$$(echo $$n | tr - _).wasm target/test-actors/$$n.wasm; done
	@echo ">> components: $$(ls target/samples/*.wasm target/test-actors/*.wasm | tr '\n' ' ')"

samples: guests

run: guests
	@echo ">> building the host (release)"
	$(CARGO) build --release -p quark-host
	@echo ">> starting quark serve on $(LISTEN), data in $(DATA_DIR), samples deployed"
	./target/release/quark serve --data-dir $(DATA_DIR) --listen $(LISTEN) \
		$(foreach s,$(SAMPLES),--deploy $(s)=target/samples/$(s).wasm) \
		--projection accounts-summary=bank:accounts-summary/all

test: guests
	@echo ">> running the tests (unit, integration, storage conformance on SQLite and PostgreSQL)"
	$(CARGO) test -p quark-host

check:
	$(CARGO) check -p quark-host --all-targets

bench: guests
	@echo ">> building and running the benchmarks (release)"
	$(CARGO) build --release -p quark-host --bins --examples
	./target/release/examples/bench
	@echo ">> HTTP load with wrk against a release host"
	bash bench/http.sh

clean-data:
	rm -rf $(DATA_DIR)
