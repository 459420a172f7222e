# blockmover — see README.md. Everything here runs on a fresh Debian machine
# with Go; test tools are installed on first use and cached outside the tree.

GO        ?= go
BIN       := bin/mover
DEMO_DIR  ?= out/demo
DEMO_SIZE ?= 1GiB
# DEVICE=/dev/... exports that device in the demo instead of a generated image.
DEVICE    ?=
TEST_FLAGS ?= -timeout 30m

.PHONY: all build demo test test-short vet fuzz bench soak tools clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/mover

# The main job on an embedded default: generate a sample device image (or
# use DEVICE), export it into a local repository, import it back, verify.
demo: build
	@set -e; mkdir -p $(DEMO_DIR); \
	export MOVER_REPOSITORY=$(DEMO_DIR)/repo MOVER_PASSWORD=$${MOVER_PASSWORD:-demo}; \
	src="$(DEVICE)"; \
	if [ -z "$$src" ]; then src=$(DEMO_DIR)/volume.img; \
		[ -f $$src ] || ./$(BIN) generate --size $(DEMO_SIZE) $$src; fi; \
	[ -f $(DEMO_DIR)/repo/config ] || ./$(BIN) init; \
	./$(BIN) export --source $$src --name demo --tag origin=make-demo; \
	rm -f $(DEMO_DIR)/restored.img; \
	./$(BIN) import --snapshot latest:demo --target $(DEMO_DIR)/restored.img; \
	cmp $$src $(DEMO_DIR)/restored.img && echo "demo: restored image is byte-identical to $$src"; \
	./$(BIN) check --read-data; \
	./$(BIN) snapshots

# Test tools: loop devices (util-linux) and an S3 server (versitygw, built
# once into $(go env GOPATH)/bin from the module proxy).
tools:
	@command -v losetup >/dev/null || (apt-get update -qq && apt-get install -y -qq util-linux)
	@hack/install-versitygw.sh >/dev/null

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) vet ./...

test: tools vet
	$(GO) test $(TEST_FLAGS) ./...

test-short: vet
	$(GO) test -short ./...

# A short run of every fuzz target.
fuzz:
	@for t in FuzzPackHeader FuzzIndex FuzzPage FuzzKeyFile FuzzConfigFile; do \
		$(GO) test -run XXX -fuzz "^$$t$$" -fuzztime 20s ./repo || exit 1; done
	$(GO) test -run XXX -fuzz '^FuzzCut$$' -fuzztime 20s ./chunk

bench: build tools
	$(GO) test -run XXX -bench . -benchtime 3x ./chunk ./repo ./mover

# Long runs: 50 SIGKILL points in exports, and the concurrency test.
soak:
	BLOCKMOVER_SOAK=1 $(GO) test -timeout 3h -count 1 -run 'Crash|Concurrent|Soak' -v ./...

clean:
	rm -rf bin out
