package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCLIKeyFileDamage: a key file whose content does not match its name
// is named as damaged, not taken for a wrong password; check reports it.
func TestCLIKeyFileDamage(t *testing.T) {
	c, dir := newCLI(t)
	repoDir := c.env["MOVER_REPOSITORY"]
	c.ok("init")
	first := objects(t, repoDir, "keys")[0]
	pw := filepath.Join(dir, "pw2")
	os.WriteFile(pw, []byte("second"), 0o600)
	// No new password: the message names the new password's sources.
	c.fails(exitUsage, "no new password: set MOVER_NEW_PASSWORD or give --new-password-file", "key", "add")
	c.ok("key", "add", "--new-password-file", pw)
	flipByte(t, first, func(n int) int { return n / 2 })
	rel, _ := filepath.Rel(repoDir, first)
	c.fails(exitLocked, "wrong password", "snapshots")
	c.fails(exitLocked, "key file "+rel+": damaged: content does not match its name", "snapshots")

	other := &cli{t: t, env: map[string]string{"MOVER_REPOSITORY": repoDir}}
	r := other.run("check", "--password-file", pw)
	if r.code != 1 || !strings.Contains(r.stdout, "error: "+rel+": damaged: content does not match its name") {
		t.Fatalf("check with a damaged key file: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	for _, k := range objects(t, repoDir, "keys") {
		flipByte(t, k, func(n int) int { return n / 3 })
	}
	other.fails(exitLocked, "every key file is damaged", "snapshots", "--password-file", pw)
}
