package backend_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/blockmover/blockmover/repo/backend"
	"github.com/blockmover/blockmover/repo/backend/fs"
)

// Behaviour is added by wrapping: here at most 8 calls in flight, each
// retried on transient errors.
func Example() {
	dir, err := os.MkdirTemp("", "example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	local, err := fs.Create(dir)
	if err != nil {
		log.Fatal(err)
	}
	be := backend.NewLimit(backend.NewRetry(local, backend.RetryOptions{
		OnRetry: func(e backend.RetryEvent) { log.Printf("retrying %s %q after %v: %v", e.Op, e.Key, e.Delay, e.Err) },
	}), 8)
	defer be.Close()

	ctx := context.Background()
	if err := be.Put(ctx, "data/ab/ab12", []byte("hello, repository")); err != nil {
		log.Fatal(err)
	}
	part, err := backend.ReadAll(ctx, be, "data/ab/ab12", 7, 10)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s\n", part)
	// Output: repository
}
