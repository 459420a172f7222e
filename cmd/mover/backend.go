package main

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/blockmover/blockmover/repo/backend"
	"github.com/blockmover/blockmover/repo/backend/fs"
	"github.com/spf13/cobra"
)

// backendOptions are the storage flags of commands that open a repository.
type backendOptions struct {
	connections int
}

func (b *backendOptions) register(cmd *cobra.Command) {
	cmd.Flags().IntVar(&b.connections, "connections", 0, "parallel backend requests (default 2 for a directory)")
}

// openBackend opens the storage behind loc. A directory repository must
// exist unless create is set.
func (g *globalOptions) openBackend(ctx context.Context, loc string, bo backendOptions, create bool) (backend.Backend, error) {
	if strings.Contains(loc, "://") {
		scheme, _, _ := strings.Cut(loc, "://")
		return nil, fmt.Errorf("repository %s: unsupported scheme %q (want a directory or s3://)", loc, scheme)
	}
	if create {
		be, err := fs.Create(loc)
		if err != nil {
			return nil, fmt.Errorf("repository %s: %w", loc, err)
		}
		return be, nil
	}
	if _, err := os.Stat(loc); err != nil {
		return nil, fmt.Errorf("repository %s does not exist (run mover init first)", loc)
	}
	be, err := fs.Open(loc)
	if err != nil {
		return nil, fmt.Errorf("repository %s: %w", loc, err)
	}
	return be, nil
}
