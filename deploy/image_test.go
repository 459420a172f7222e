package deploy

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// TestImageTarball runs `make image` and checks what `docker load` reads:
// manifest.json, the config (entrypoint, user, environment, platform, diff
// IDs) and the layer (a static mover, CA certificates, /etc/passwd, /tmp).
func TestImageTarball(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a static mover and the image tool (about a minute)")
	}
	out := filepath.Join(t.TempDir(), "image.tar")
	if b, err := exec.Command("make", "-C", "..", "image", "IMAGE_TAR="+out, "IMAGE=blockmover/mover:test").CombinedOutput(); err != nil {
		t.Fatalf("make image: %v\n%s", err, b)
	}
	files := readTar(t, out)
	var manifest []struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	if err := json.Unmarshal(files["manifest.json"], &manifest); err != nil {
		t.Fatalf("manifest.json: %v", err)
	}
	if len(manifest) != 1 || !slices.Equal(manifest[0].RepoTags, []string{"blockmover/mover:test"}) || len(manifest[0].Layers) != 1 {
		t.Fatalf("manifest %+v", manifest)
	}
	m := manifest[0]
	cfgBytes := files[m.Config]
	if sum := sha256.Sum256(cfgBytes); "sha256:"+hex.EncodeToString(sum[:]) != m.Config {
		t.Errorf("config digest mismatch for %s", m.Config)
	}
	var cfg struct {
		Architecture, OS string
		Config           struct {
			Entrypoint []string
			User       string
			Env        []string
			Labels     map[string]string
		}
		RootFS struct {
			Type    string
			DiffIDs []string `json:"diff_ids"`
		}
	}
	if err := json.Unmarshal(cfgBytes, &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.OS != "linux" || cfg.Architecture != runtime.GOARCH || !slices.Equal(cfg.Config.Entrypoint, []string{"/mover"}) || cfg.Config.User != "0:0" ||
		!slices.Contains(cfg.Config.Env, "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt") {
		t.Errorf("config %+v", cfg)
	}
	if cfg.RootFS.Type != "layers" || len(cfg.RootFS.DiffIDs) != 1 {
		t.Fatalf("rootfs %+v", cfg.RootFS)
	}
	// The layer: gzip of a tar whose sha256 is the diff ID.
	zr, err := gzip.NewReader(bytes.NewReader(files[m.Layers[0]]))
	if err != nil {
		t.Fatal(err)
	}
	layer, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256(layer); "sha256:"+hex.EncodeToString(sum[:]) != cfg.RootFS.DiffIDs[0] {
		t.Error("layer does not match its diff ID")
	}
	lf := map[string]*tar.Header{}
	var mover []byte
	tr := tar.NewReader(bytes.NewReader(layer))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		lf[h.Name] = h
		if h.Name == "mover" {
			mover, _ = io.ReadAll(tr)
		}
	}
	for _, n := range []string{"mover", "etc/passwd", "etc/group", "tmp/"} {
		if lf[n] == nil {
			t.Errorf("layer lacks %s", n)
		}
	}
	if h := lf["mover"]; h == nil || h.Mode&0o111 == 0 {
		t.Fatal("no executable /mover")
	}
	ef, err := elf.NewFile(bytes.NewReader(mover))
	if err != nil {
		t.Fatalf("/mover is not ELF: %v", err)
	}
	for _, p := range ef.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("/mover is dynamically linked")
		}
	}
	if _, err := os.Stat("/etc/ssl/certs/ca-certificates.crt"); err == nil && lf["etc/ssl/certs/ca-certificates.crt"] == nil {
		t.Error("layer lacks the CA bundle")
	}
	if !strings.HasPrefix(string(mover[:4]), "\x7fELF") {
		t.Error("bad ELF magic")
	}
	// The image's /mover runs with nothing around it (an empty environment
	// as in the scratch image) and knows the commands of a mover Job.
	bin := filepath.Join(t.TempDir(), "mover")
	if err := os.WriteFile(bin, mover, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "export", "--help")
	cmd.Env = []string{}
	if b, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(b), "--termination-log") {
		t.Errorf("/mover export --help: %v\n%s", err, b)
	}
}

func readTar(t *testing.T, path string) map[string][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	files := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		files[h.Name] = b
	}
}
