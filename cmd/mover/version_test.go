package main

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/blockmover/blockmover/repo"
)

func TestDescribeBuild(t *testing.T) {
	info := func(main string, settings ...string) func() (*debug.BuildInfo, bool) {
		return func() (*debug.BuildInfo, bool) {
			bi := &debug.BuildInfo{GoVersion: "go1.99", Main: debug.Module{Version: main}}
			for i := 0; i+1 < len(settings); i += 2 {
				bi.Settings = append(bi.Settings, debug.BuildSetting{Key: settings[i], Value: settings[i+1]})
			}
			return bi, true
		}
	}
	const rev = "0123456789abcdef0123456789abcdef01234567"
	tests := []struct {
		name, linked string
		read         func() (*debug.BuildInfo, bool)
		want, commit string
	}{
		{"linker", "v1.2.0-3-g0123456", info("(devel)", "vcs.revision", rev), "v1.2.0-3-g0123456", rev},
		{"module", "", info("v1.2.0", "vcs.revision", rev), "v1.2.0", rev},
		{"revision", "", info("(devel)", "vcs.revision", rev, "vcs.modified", "false"), "0123456789ab", rev},
		{"dirty", "", info("(devel)", "vcs.revision", rev, "vcs.modified", "true"), "0123456789ab+dirty", rev},
		{"nothing", "", info("(devel)"), "unknown", ""},
		{"no build info", "", func() (*debug.BuildInfo, bool) { return nil, false }, "unknown", ""},
	}
	for _, tc := range tests {
		v := describeBuild(tc.linked, tc.read)
		if v.Version != tc.want || v.Commit != tc.commit || v.RepositoryFormat != repo.FormatVersion {
			t.Errorf("%s: %+v, want version %q commit %q", tc.name, v, tc.want, tc.commit)
		}
		if s := v.String(); !strings.HasPrefix(s, "mover "+tc.want) || !strings.Contains(s, fmt.Sprintf("repository format %d", repo.FormatVersion)) {
			t.Errorf("%s: %q", tc.name, s)
		}
	}
}

// TestVersionCommand: mover --version, mover version and its JSON.
func TestVersionCommand(t *testing.T) {
	c := &cli{t: t, env: map[string]string{}}
	want := buildVersion().String() + "\n"
	for _, args := range [][]string{{"--version"}, {"version"}} {
		if r := c.ok(args...); r.stdout != want {
			t.Errorf("mover %s: %q, want %q", strings.Join(args, " "), r.stdout, want)
		}
	}
	var v versionInfo
	r := c.ok("version", "--json")
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil || v.Version == "" || v.Go != runtime.Version() || v.RepositoryFormat != repo.FormatVersion {
		t.Fatalf("mover version --json: %q: %v", r.stdout, err)
	}
	c.fails(exitUsage, "unknown command", "version", "extra")
}

// TestVersionLinked: the version that make build sets with -ldflags -X.
func TestVersionLinked(t *testing.T) {
	if testing.Short() {
		t.Skip("builds mover")
	}
	bin := filepath.Join(t.TempDir(), "mover")
	if out, err := exec.Command("go", "build", "-ldflags", "-X main.version=v9.8.7-test", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v: %s", err, out)
	}
	out, err := exec.Command(bin, "--version").Output()
	if err != nil || !strings.HasPrefix(string(out), "mover v9.8.7-test") {
		t.Fatalf("mover --version: %q, %v", out, err)
	}
}
