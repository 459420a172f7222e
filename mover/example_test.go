package mover_test

import (
	"bytes"
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/blockmover/blockmover/mover"
	"github.com/blockmover/blockmover/repo"
	"github.com/blockmover/blockmover/repo/backend/fs"
)

// Export a volume into a new repository on a local directory and import it
// onto a new file.
func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "mover-example")
	defer os.RemoveAll(dir)

	// A 32 MiB volume image: 8 MiB of text, the rest a hole.
	vol := filepath.Join(dir, "volume.img")
	img := bytes.Repeat([]byte("blockmover example data\n"), 8<<20/24)
	os.WriteFile(vol, img, 0o600)
	os.Truncate(vol, 32<<20)

	be, err := fs.Create(filepath.Join(dir, "repo"))
	if err != nil {
		log.Fatal(err)
	}
	password := []byte("example password")
	r, err := repo.Init(ctx, be, password, repo.InitOptions{})
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close()

	src, err := mover.OpenSource(vol, false)
	if err != nil {
		log.Fatal(err)
	}
	defer src.Close()
	res, err := mover.Export(ctx, src, r, mover.ExportOptions{Volume: "example"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("exported %d MiB: %d MiB of holes, %d MiB read\n", res.Size>>20, res.ZeroBytes>>20, res.ReadBytes>>20)

	snap, err := r.FindSnapshot(ctx, "latest:example")
	if err != nil {
		log.Fatal(err)
	}
	dst, err := mover.OpenTarget(filepath.Join(dir, "restored.img"), snap.Size, mover.TargetOptions{Create: true})
	if err != nil {
		log.Fatal(err)
	}
	defer dst.Close()
	ires, err := mover.Import(ctx, r, snap, dst, mover.ImportOptions{})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("imported %d MiB, wrote %d MiB\n", ires.Size>>20, ires.WrittenBytes>>20)
	// Output:
	// exported 32 MiB: 24 MiB of holes, 8 MiB read
	// imported 32 MiB, wrote 8 MiB
}
