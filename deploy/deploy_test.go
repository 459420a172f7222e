package deploy

import (
	"bytes"
	"os"
	"testing"
)

// TestManifestsEmbedded: each function returns its file's bytes, as a copy
// the caller may change.
func TestManifestsEmbedded(t *testing.T) {
	for name, f := range map[string]func() []byte{
		"rbac.yaml": RBAC, "volume-mode-change.yaml": VolumeModeChange,
		"export-job.yaml": ExportJob, "import-job.yaml": ImportJob, "controller.yaml": Controller,
	} {
		want, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		got := f()
		if !bytes.Equal(got, want) || !bytes.Contains(got, []byte("kind: ")) {
			t.Errorf("%s: embedded bytes differ from the file", name)
		}
		got[0] ^= 0xff
		if !bytes.Equal(f(), want) {
			t.Errorf("%s: changing a returned copy changed the next one", name)
		}
	}
}
