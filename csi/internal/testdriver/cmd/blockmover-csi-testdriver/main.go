// Command blockmover-csi-testdriver runs the CSI test driver of package
// testdriver on a unix socket until SIGINT or SIGTERM. It must run as root
// (losetup, mkfs.ext4, mount).
//
//	blockmover-csi-testdriver --endpoint unix:///run/csi/csi.sock \
//	    --state-dir /var/lib/blockmover-csi --node-id node-1
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/blockmover/blockmover/csi/internal/testdriver"
	"github.com/container-storage-interface/spec/lib/go/csi"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "blockmover-csi-testdriver:", err)
		os.Exit(1)
	}
}

func run() error {
	host, _ := os.Hostname()
	var (
		cfg      testdriver.Config
		endpoint = flag.String("endpoint", "unix:///run/blockmover-csi/csi.sock", "unix socket to serve Identity, Controller, Node and SnapshotMetadata on")
		variable = flag.Bool("variable-length", false, "SnapshotMetadata streams VARIABLE_LENGTH extents instead of FIXED_LENGTH blocks")
	)
	flag.StringVar(&cfg.StateDir, "state-dir", "", "directory of the volume and snapshot files (required)")
	flag.StringVar(&cfg.NodeID, "node-id", host, "node name, also the value of the topology key "+testdriver.TopologyKey)
	flag.StringVar(&cfg.Name, "driver-name", testdriver.DefaultName, "CSI driver name")
	flag.Int64Var(&cfg.BlockSize, "block-size", testdriver.DefaultBlockSize, "block size of GetMetadataDelta and FIXED_LENGTH metadata")
	flag.Parse()
	if flag.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", flag.Args())
	}
	if *variable {
		cfg.MetadataType = csi.BlockMetadataType_VARIABLE_LENGTH
	}
	cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, nil))

	d, err := testdriver.New(cfg)
	if err != nil {
		return err
	}
	l, err := testdriver.Listen(*endpoint)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg.Log.Info("serving", "endpoint", *endpoint, "driver", cfg.Name, "node", cfg.NodeID, "state", cfg.StateDir)
	return d.Serve(ctx, l)
}
