# blockmover — see README.md. Everything here runs on a fresh Debian machine
# with Go; test tools are installed on first use and cached outside the tree.

GO        ?= go
BIN       := bin/mover
DEMO_DIR  ?= out/demo
DEMO_SIZE ?= 1GiB
# DEVICE=/dev/... exports that device in the demo instead of a generated image.
DEVICE    ?=
TEST_FLAGS ?= -timeout 30m

.PHONY: all build demo test test-prebuild test-short vet fuzz bench soak scale tools clean k8s-tools cluster-tools image cluster cluster-down

all: build

# The version mover --version prints: the checkout's git describe.
VERSION   ?= $(shell git describe --always --dirty 2>/dev/null)

build:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/mover

# The main job on an embedded default: generate a sample device image (or
# use DEVICE), export it into a local repository, import it back, verify.
demo: build
	@set -e; mkdir -p $(DEMO_DIR); \
	export MOVER_REPOSITORY=$(DEMO_DIR)/repo MOVER_PASSWORD=$${MOVER_PASSWORD:-demo}; \
	src="$(DEVICE)"; \
	if [ -z "$$src" ]; then src=$(DEMO_DIR)/volume.img; \
		[ -f $$src ] || ./$(BIN) generate --size $(DEMO_SIZE) $$src; fi; \
	[ -f $(DEMO_DIR)/repo/config ] || ./$(BIN) init; \
	./$(BIN) export --source $$src --volume demo --tag origin=make-demo; \
	rm -f $(DEMO_DIR)/restored.img; \
	./$(BIN) import --snapshot latest:demo --target $(DEMO_DIR)/restored.img; \
	cmp $$src $(DEMO_DIR)/restored.img && echo "demo: restored image is byte-identical to $$src"; \
	./$(BIN) check --read-data; \
	./$(BIN) snapshots

# Test tools: loop devices and blkid (util-linux), mkfs.ext4 (e2fsprogs, for
# the CSI test driver's Filesystem volumes), headless Chromium (renders the
# bench report in a test), tmux (a real 80-column terminal for the progress
# bar test), each installed with apt-get only when missing; the peers of
# mover bench at the versions users run today (restic v0.19.1, kopia
# v0.22.3: hack/install-peers.sh) and an S3 server (versitygw), built once
# into $(go env GOPATH)/bin from the module proxy; and the test cluster's
# binaries (k8s-tools, cluster-tools below).
tools:
	@missing=; for t in losetup:util-linux blkid:util-linux mkfs.ext4:e2fsprogs chromium:chromium tmux:tmux; do \
		command -v $${t%%:*} >/dev/null || missing="$$missing $${t#*:}"; done; \
	if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; fi
	@hack/install-peers.sh >/dev/null
	@hack/install-versitygw.sh >/dev/null
	@hack/install-k8s-test-tools.sh >/dev/null
	@hack/install-cluster-tools.sh >/dev/null

# kube-apiserver and etcd for the csi tests (about ten minutes once; cached
# in $(go env GOPATH)/bin, outside the tree).
k8s-tools:
	hack/install-k8s-test-tools.sh

# The rest of the single-node test cluster (issue 13), into the same cache:
# kube-controller-manager, kube-scheduler, kubectl, kubelet (one go build of
# k8s.io/kubernetes), snapshot-controller, csi-snapshotter, csi-provisioner,
# csi-snapshot-metadata; cold build times in README.md (about 25 minutes).
# Part of `make tools`: csi/internal/testcluster's TestControllers runs
# them (and skips, naming this target, when they are missing).
cluster-tools: k8s-tools
	hack/install-cluster-tools.sh

# A single-node cluster on this machine, as processes (root only): etcd,
# kube-apiserver, the controllers, a real kubelet with containerd and runc,
# the test CSI driver (StorageClass and VolumeSnapshotClass "blockmover")
# and its sidecars, with the mover image of `make image` imported as
# $(IMAGE), and S3 (versitygw) for a repository. Writes the settings to
# $(CLUSTER_DIR)/env (KUBECONFIG, kubectl in PATH, S3) and prints them; the
# walkthrough is in docs/kubernetes.md. `make cluster-down` stops it and
# reports anything left behind.
CLUSTER_DIR ?= out/cluster
cluster: cluster-tools image
	$(GO) build -o bin/localcluster ./csi/internal/testcluster/cmd/localcluster
	bin/localcluster up -dir $(CLUSTER_DIR) -image $(IMAGE_TAR)

cluster-down:
	@if [ -x bin/localcluster ]; then bin/localcluster down -dir $(CLUSTER_DIR); \
	else $(GO) run ./csi/internal/testcluster/cmd/localcluster down -dir $(CLUSTER_DIR); fi

# The mover image as a tarball for `docker load` / `kind load image-archive`,
# built without a container engine (deploy/Dockerfile is the same image).
IMAGE     ?= blockmover/mover:dev
IMAGE_TAR ?= out/mover-image.tar
image:
	hack/build-image.sh $(IMAGE_TAR) $(IMAGE)

# staticcheck, built once into $(go env GOPATH)/bin (outside the tree).
STATICCHECK_VERSION := v0.6.1
STATICCHECK := $(shell $(GO) env GOPATH | cut -d: -f1)/bin/staticcheck-$(STATICCHECK_VERSION)
$(STATICCHECK):
	@mkdir -p $(dir $@) && tmp=$$(mktemp -d) && GOBIN=$$tmp $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) && mv $$tmp/staticcheck $@ && rmdir $$tmp

vet: $(STATICCHECK)
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1)
	@$(GO) mod tidy -diff >/dev/null || (echo "go.mod/go.sum are not tidy: run go mod tidy"; $(GO) mod tidy -diff; exit 1)
	$(GO) vet ./...
	$(STATICCHECK) ./...

# The csi tests' cluster builds its node's binaries and the mover's image
# (static -trimpath builds, then hack/tools/imagebuild) inside its setup's
# time bound, while other packages' tests share the two cores: on a cold
# build cache (a first CI run) that setup ran out of time. Compile them
# first, alone, into the build cache.
test-prebuild:
	CGO_ENABLED=0 $(GO) build -trimpath ./cmd/mover ./csi/internal/testcluster/cmd/pause ./csi/internal/testdriver/cmd/blockmover-csi-testdriver
	cd hack/tools && GONOSUMDB=k8s.io GOFLAGS=-mod=mod $(GO) build -o /dev/null ./imagebuild

test: tools vet test-prebuild
	$(GO) test $(TEST_FLAGS) ./...
	$(GO) test -tags purego ./chunk # the Go fallback of the assembly loop

test-short: vet
	$(GO) test -short ./...

# A short run of every fuzz target (found by name; FUZZTIME each, 20s by
# default): hack/fuzz.sh.
fuzz:
	GO=$(GO) hack/fuzz.sh

# `mover bench` (about 17 minutes on 2 cores): the 4 GiB vm-image scenario,
# 3 interleaved runs against restic (and kopia if installed), four sweeps;
# then the Go benchmarks (about 7 minutes; second, so that the load average
# mover bench records does not count them). mover bench refreshes the
# generated section of BENCHMARKS.md (between the "mover bench" markers) and writes
# out/bench/report.html. Image, restore targets and repositories go to
# BENCH_WORK (BENCHMARKS.md's figures: BENCH_WORK=/dev/shm/mover-bench, to
# measure the data path rather than this machine's disk).
BENCH_WORK ?= out/bench/work
BENCH_ARGS ?= --preset vm-image --size 4GiB --runs 3 --peers restic,kopia \
	--sweep workers=1,2,4 --sweep chunker=cdc-1Mi,cdc-4Mi,fixed-1Mi --sweep zstd=fastest,default,better --sweep pack=16Mi,64Mi
bench: build tools
	@mkdir -p out/bench && rm -rf $(BENCH_WORK)
	./$(BIN) bench $(BENCH_ARGS) --workdir $(BENCH_WORK) --html out/bench/report.html --markdown BENCHMARKS.md
	@rm -rf $(BENCH_WORK)
	$(GO) test -run XXX -bench . -benchtime 3x ./chunk ./repo ./changes ./mover

# Long runs: 50 SIGKILL points in exports, and the concurrency test.
soak:
	BLOCKMOVER_SOAK=1 $(GO) test -timeout 3h -count 1 -run 'Crash|Concurrent|Soak' -v ./...

# Scale (issue 18; opt-in, not part of test or soak): repositories of 0, 1M
# and 10M chunks (synthetic index files in the real format) and of 1,000 and
# 10,000 snapshots, on a directory and on S3 (versitygw), and a table of
# wall time, peak RSS and S3 requests per command (bench/scale). The
# directory repositories stay in SCALE_WORK (about 3 GB, 625,000 files at
# 10M chunks) and are reused by the next run, so that two binaries are
# measured on the same repositories: MOVER_BIN=path/to/old/mover make scale.
SCALE_WORK ?= out/scale
scale: build
	@hack/install-versitygw.sh >/dev/null
	@mkdir -p $(SCALE_WORK)
	BLOCKMOVER_SCALE=1 MOVER_BIN=$${MOVER_BIN:-$(CURDIR)/$(BIN)} SCALE_WORK=$(abspath $(SCALE_WORK)) \
		$(GO) test -timeout 3h -count=1 -run '^TestScale$$' -v ./bench/scale

clean:
	rm -rf bin out
