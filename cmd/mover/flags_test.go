package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

// TestFlagSets: --volume names a volume everywhere, --name still works;
// -n is no command's dry-run (it is k8s's namespace); commands that open no
// repository have no repository flags.
func TestFlagSets(t *testing.T) {
	c, dir := newCLI(t)
	img := filepath.Join(dir, "a.img")
	c.ok("generate", "--size", "2Mi", img)
	c.ok("init")
	c.ok("export", "-q", "--source", img, "--volume", "a")
	c.ok("export", "-q", "--source", img, "--name", "b")
	var snaps []struct{ Volume string }
	if err := json.Unmarshal([]byte(c.ok("snapshots", "--json", "--volume", "b").stdout), &snaps); err != nil || len(snaps) != 1 || snaps[0].Volume != "b" {
		t.Fatalf("snapshots --volume b: %v, %v", snaps, err)
	}
	c.ok("forget", "--volume", "a", "--keep-last", "1", "--dry-run")
	c.fails(2, "unknown shorthand flag: 'n'", "forget", "--volume", "a", "--keep-last", "1", "-n")
	c.fails(2, "unknown shorthand flag: 'n'", "gc", "-n")
	for _, cmd := range [][]string{{"generate"}, {"diff"}, {"version"}, {"k8s", "changes"}} {
		r := c.ok(append(cmd, "--help")...)
		if strings.Contains(r.stdout, "--password-file") || strings.Contains(r.stdout, "--repo") {
			t.Errorf("mover %s --help lists repository flags", strings.Join(cmd, " "))
		}
	}
	if r := c.ok("export", "--help"); !strings.Contains(r.stdout, "--repo") || !strings.Contains(r.stdout, "--volume") {
		t.Error("export --help lacks --repo or --volume")
	}
}
