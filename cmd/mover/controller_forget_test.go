package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestForgetBackups: the controller's forget Job forgets the snapshots of
// the deleted and (with --orphans) the vanished Backups, keeps those of
// live Backups, untagged ones and those newer than --before, and refuses
// bad input with one line.
func TestForgetBackups(t *testing.T) {
	c, dir := newCLI(t)
	img := filepath.Join(dir, "v.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	makeImage(t, img, 1<<20)
	c.ok("init")
	ids := map[string]string{}
	for _, b := range []string{"live", "gone", "vanished", ""} {
		args := []string{"export", "-q", "--json", "--source", img, "--name", "v-" + b}
		if b != "" {
			args = append(args, "--tag=velero.io/backup-name="+b)
		}
		var ex exportJSON
		if err := json.Unmarshal([]byte(c.ok(args...).stdout), &ex); err != nil {
			t.Fatal(err)
		}
		ids[b] = ex.Snapshot
	}
	now := time.Now().Add(time.Minute).UTC().Format(time.RFC3339)
	listed := func() map[string]bool {
		var snaps []struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal([]byte(c.ok("snapshots", "--json").stdout), &snaps); err != nil {
			t.Fatal(err)
		}
		out := map[string]bool{}
		for _, s := range snaps {
			out[s.ID] = true
		}
		return out
	}
	forget := func(args ...string) forgetBackupsJSON {
		var out forgetBackupsJSON
		if err := json.Unmarshal([]byte(c.ok(append([]string{"controller", "forget-backups", "--json"}, args...)...).stdout), &out); err != nil {
			t.Fatal(err)
		}
		return out
	}

	// Without --orphans only the deleted backup goes; snapshots newer than
	// --before are never judged.
	if out := forget("--before=2000-01-01T00:00:00Z", "--deleted=gone"); out.Removed != 0 {
		t.Errorf("snapshots newer than --before forgotten: %+v", out)
	}
	if out := forget("--before="+now, "--live=live", "--deleted=gone"); out.Removed != 1 || len(out.Backups) != 1 || out.Backups[0] != "gone" {
		t.Errorf("--deleted=gone: %+v", out)
	}
	// With --orphans, a vanished backup's snapshot goes once older than
	// the grace.
	if out := forget("--before="+now, "--live=live", "--orphans", "--grace=1h"); out.Removed != 0 {
		t.Errorf("an orphan younger than the grace forgotten: %+v", out)
	}
	if out := forget("--before="+now, "--live=live", "--orphans", "--grace=0s"); out.Removed != 1 || out.Backups[0] != "vanished" {
		t.Errorf("--orphans: %+v", out)
	}
	got := listed()
	if len(got) != 2 || !got[ids["live"]] || !got[ids[""]] {
		t.Errorf("left %v; want the live backup's %s and the untagged %s", got, ids["live"], ids[""])
	}

	c.fails(exitUsage, "--before is required", "controller", "forget-backups")
	c.fails(exitUsage, "want an RFC 3339 time", "controller", "forget-backups", "--before=yesterday")
	c.fails(exitUsage, "must not be negative", "controller", "forget-backups", "--before="+now, "--grace=-1s")
}
