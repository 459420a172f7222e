package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// TestSizesOneGrammar: every flag that takes a size reads the program's
// one grammar (internal/units), so a Kubernetes size such as 10Gi works
// wherever a size is taken, and 16m (milli in Kubernetes) is refused with
// a hint.
func TestSizesOneGrammar(t *testing.T) {
	c, dir := newCLI(t)
	img := filepath.Join(dir, "a.img")
	c.ok("generate", "--size", "3Mi", img)
	if fi, err := os.Stat(img); err != nil || fi.Size() != 3<<20 {
		t.Fatalf("generate --size 3Mi: %v, %v", fi, err)
	}
	c.ok("generate", "--size", "2MiB", img+".2")
	c.ok("generate", "--size", "2M", img+".3") // decimal, as in Kubernetes
	if fi, err := os.Stat(img + ".3"); err != nil || fi.Size() != 2e6 {
		t.Fatalf("generate --size 2M: %v, %v", fi, err)
	}
	c.fails(2, "16Mi", "generate", "--size", "16m", img+".4")
	c.ok("init", "--pack-size", "8Mi", "--avg-size", "1Mi", "--min-size", "512Ki", "--max-size", "4Mi")
	c.ok("export", "--source", img, "--name", "a", "--pack-size", "4MiB", "-q")
	c.ok("diff", "--block-size", "64Ki", img+".2", img)

	for _, tc := range []struct {
		in   string
		want int64
	}{{"1Gi", 1 << 30}, {"1GiB", 1 << 30}, {"1G", 1e9}, {"512Mi", 512 << 20}} {
		o := &k8sOptions{memory: tc.in}
		j, err := o.job(&globalOptions{})
		if err != nil {
			t.Fatalf("--memory %s: %v", tc.in, err)
		}
		q := j.Resources.Limits[corev1.ResourceMemory]
		if q.Value() != tc.want {
			t.Errorf("--memory %s: limit %s = %d bytes, want %d", tc.in, q.String(), q.Value(), tc.want)
		}
	}
	if _, err := (&k8sOptions{memory: "1gb"}).job(&globalOptions{}); err == nil {
		t.Error("--memory 1gb accepted")
	}
}

// TestImportProgressSaysFetched: import's progress names the bytes it
// downloads fetched_bytes, as its result does, not read_bytes.
func TestImportProgressSaysFetched(t *testing.T) {
	c, dir := newCLI(t)
	img := filepath.Join(dir, "a.img")
	c.ok("generate", "--size", "4Mi", img)
	c.ok("init")
	c.ok("export", "-q", "--source", img, "--volume", "a")
	r := c.ok("import", "--json", "--snapshot", "latest:a", "--target", filepath.Join(dir, "out.img"))
	lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
	var last map[string]any
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &last); err != nil {
		t.Fatalf("last progress line %q: %v", lines[len(lines)-1], err)
	}
	if f, _ := last["fetched_bytes"].(float64); f <= 0 || last["read_bytes"] != float64(0) {
		t.Errorf("import progress %v: want fetched_bytes > 0 and read_bytes 0", last)
	}
}
