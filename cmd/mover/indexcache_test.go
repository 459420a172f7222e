package main

import (
	"os"
	"path/filepath"
	"testing"
)

// TestIndexCacheFlag: export and import keep the index cache where
// --index-cache, $MOVER_INDEX_CACHE or $HOME say, one file per repository;
// "off" and an environment without a home keep none; the repository
// reads back the same either way.
func TestIndexCacheFlag(t *testing.T) {
	c, dir := newCLI(t)
	img := filepath.Join(dir, "vol.img")
	makeImage(t, img, 8<<20)
	c.ok("init", "--chunker", "fixed")
	files := func(d string) int {
		m, _ := filepath.Glob(filepath.Join(d, "*"))
		return len(m)
	}
	home := filepath.Join(dir, "home")
	c.env["HOME"] = home
	c.ok("export", "--source", img, "--volume", "a")
	if n := files(filepath.Join(home, ".cache", "blockmover", "index")); n != 1 {
		t.Fatalf("%d cache files under $HOME/.cache, want 1", n)
	}
	env := filepath.Join(dir, "env")
	c.env["MOVER_INDEX_CACHE"] = env
	c.ok("export", "--source", img, "--volume", "b")
	flag := filepath.Join(dir, "flag")
	c.ok("import", "--index-cache", flag, "--snapshot", "latest:a", "--target", filepath.Join(dir, "out.img"))
	if files(env) != 1 || files(flag) != 1 {
		t.Fatalf("cache files: %d in $MOVER_INDEX_CACHE, %d in --index-cache; want 1 each", files(env), files(flag))
	}
	in, _ := os.ReadFile(img)
	out, _ := os.ReadFile(filepath.Join(dir, "out.img"))
	if string(in) != string(out) {
		t.Fatal("imported volume differs")
	}
	off := filepath.Join(dir, "off")
	c.env["MOVER_INDEX_CACHE"] = "off"
	c.env["HOME"] = off
	c.ok("export", "--source", img, "--volume", "c")
	delete(c.env, "MOVER_INDEX_CACHE")
	delete(c.env, "HOME")
	c.ok("export", "--source", img, "--volume", "d")
	if _, err := os.Stat(off); err == nil {
		t.Fatal("a cache was written with MOVER_INDEX_CACHE=off")
	}
}
