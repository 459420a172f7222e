package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"

	"github.com/blockmover/blockmover/repo"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// globalOptions are the flags every command shares.
type globalOptions struct {
	env          *environment
	repo         string
	passwordFile string
	keyFile      string
	json         bool
	quiet        bool
	cpuProfile   string
	blockProfile string // and the mutex profile beside it (…/mutex)
	traceFile    string
	indexCache   string
	pod          podState // in-pod behaviour of export and import (pod.go)
}

// register adds the flags every command has.
func (g *globalOptions) register(root *cobra.Command) {
	f := root.PersistentFlags()
	f.BoolVar(&g.json, "json", false, "print the result as one JSON object on stdout and progress as JSON lines on stderr")
	f.BoolVarP(&g.quiet, "quiet", "q", false, "print no progress")
	f.StringVar(&g.cpuProfile, "cpuprofile", "", "write a Go CPU profile of the command to this file")
	f.MarkHidden("cpuprofile")
	f.StringVar(&g.blockProfile, "blockprofile", "", "write Go block and mutex profiles of the command to this file and FILE.mutex")
	f.MarkHidden("blockprofile")
	f.StringVar(&g.traceFile, "trace", "", "write a Go execution trace of the command to this file")
	f.MarkHidden("trace")
}

// registerRepo adds the repository flags to cmd and its subcommands: only
// commands that open a repository have them.
func (g *globalOptions) registerRepo(cmd *cobra.Command) {
	f := cmd.PersistentFlags()
	f.StringVarP(&g.repo, "repo", "r", "", "repository location: a directory or s3://BUCKET/PREFIX (default $MOVER_REPOSITORY)")
	f.StringVar(&g.passwordFile, "password-file", "", "read the repository password from this file (default $MOVER_PASSWORD)")
	f.StringVar(&g.keyFile, "key-file", "", "use this file's bytes as the repository secret (e.g. a mounted Secret)")
	f.StringVar(&g.indexCache, "index-cache", "", `directory of the local index cache of export and import, so that opening reads only new index files (default $MOVER_INDEX_CACHE, else $XDG_CACHE_HOME/blockmover/index or $HOME/.cache/blockmover/index; "off": none)`)
}

// indexCacheDir returns the directory of the local index cache, or ""
// for none: --index-cache, $MOVER_INDEX_CACHE, or the user's cache
// directory as os.UserCacheDir finds it on Linux (from this command's
// environment).
func (g *globalOptions) indexCacheDir() string {
	d := g.indexCache
	if d == "" {
		d = g.env.getenv("MOVER_INDEX_CACHE")
	}
	switch {
	case d == "off":
		return ""
	case d != "":
		return d
	}
	if x := g.env.getenv("XDG_CACHE_HOME"); filepath.IsAbs(x) {
		return filepath.Join(x, "blockmover", "index")
	}
	if h := g.env.getenv("HOME"); filepath.IsAbs(h) && h != "/" {
		return filepath.Join(h, ".cache", "blockmover", "index")
	}
	return ""
}

func (g *globalOptions) location() (string, error) {
	loc := g.repo
	if loc == "" {
		loc = g.env.getenv("MOVER_REPOSITORY")
	}
	if loc == "" {
		return "", usagef("no repository: give --repo or set MOVER_REPOSITORY")
	}
	return loc, nil
}

// secret returns the repository password from --key-file, --password-file,
// $MOVER_PASSWORD or, on a terminal, a prompt.
func (g *globalOptions) secret(prompt string, confirm bool) ([]byte, error) {
	switch {
	case g.keyFile != "" && g.passwordFile != "":
		return nil, usagef("--key-file and --password-file exclude each other")
	case g.keyFile != "":
		b, err := os.ReadFile(g.keyFile)
		if err != nil {
			return nil, fmt.Errorf("reading key file: %w", err)
		}
		if len(b) == 0 {
			return nil, codedError{outcome{exitLocked, "NoPassword", false}, fmt.Errorf("key file %s is empty", g.keyFile)}
		}
		return b, nil
	case g.passwordFile != "":
		return readPasswordFile(g.passwordFile)
	}
	if pw := g.env.getenv("MOVER_PASSWORD"); pw != "" {
		return []byte(pw), nil
	}
	return g.prompt(prompt, confirm)
}

func readPasswordFile(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading password file: %w", err)
	}
	b = bytes.TrimRight(b, "\r\n")
	if len(b) == 0 {
		return nil, codedError{outcome{exitLocked, "NoPassword", false}, fmt.Errorf("password file %s is empty", path)}
	}
	return b, nil
}

func (g *globalOptions) prompt(prompt string, confirm bool) ([]byte, error) {
	f, ok := g.env.stdin.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return nil, errNoPassword
	}
	fmt.Fprint(g.env.stderr, prompt)
	pw, err := term.ReadPassword(int(f.Fd()))
	fmt.Fprintln(g.env.stderr)
	if err != nil {
		return nil, fmt.Errorf("reading password: %w", err)
	}
	if len(pw) == 0 {
		return nil, errors.New("empty password")
	}
	if confirm {
		fmt.Fprint(g.env.stderr, "enter it again: ")
		again, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(g.env.stderr)
		if err != nil {
			return nil, fmt.Errorf("reading password: %w", err)
		}
		if !bytes.Equal(pw, again) {
			return nil, errors.New("passwords do not match")
		}
	}
	return pw, nil
}

// openRepo opens the repository named by the flags.
func (g *globalOptions) openRepo(ctx context.Context, bo backendOptions, opts repo.Options) (*repo.Repository, error) {
	loc, err := g.location()
	if err != nil {
		return nil, err
	}
	be, err := g.openBackend(ctx, loc, bo)
	if err != nil {
		return nil, err
	}
	pw, err := g.secret("repository password: ", false)
	if err != nil {
		be.Close()
		return nil, err
	}
	r, err := repo.Open(ctx, be, pw, opts)
	if err != nil {
		be.Close()
		if errors.Is(err, repo.ErrNotRepository) || errors.Is(err, repo.ErrConfigLost) {
			return nil, fmt.Errorf("%s: %w", loc, err)
		}
		return nil, err
	}
	for _, w := range r.Warnings() {
		warnf(g.env.stderr, "%s", withHint(w))
	}
	if g.env.getenv("MOVER_DEBUG") != "" {
		for _, n := range r.CacheNotes() {
			warnf(g.env.stderr, "%s", n)
		}
	}
	return r, nil
}

func closeRepo(r *repo.Repository) {
	r.Close()
	r.Backend().Close()
}

// printJSON writes v as one JSON object on stdout.
func (g *globalOptions) printJSON(v any) error {
	enc := json.NewEncoder(g.env.stdout)
	return enc.Encode(v)
}

// warnf prints a one-line warning.
func warnf(w io.Writer, format string, args ...any) {
	fmt.Fprintf(w, "mover: warning: "+format+"\n", args...)
}

// indexBytesPerBlob is what an index entry costs in memory at most
// (repo/FORMAT.md measures 48 bytes merged, 56 at the peak).
const indexBytesPerBlob = 64

// limitMemory sets Go's soft memory limit to need bytes of buffers plus a
// margin for the collector and the runtime, so the heap does not grow to
// twice what is live (GOGC) and the peak RSS stays near need. It does
// nothing when GOMEMLIMIT is set (the Kubernetes Job sets it from the
// pod's memory limit). It returns a function that restores the previous
// limit.
func (g *globalOptions) limitMemory(need int64) func() {
	if g.env.getenv("GOMEMLIMIT") != "" {
		return func() {}
	}
	prev := debug.SetMemoryLimit(need + need/4 + 16<<20)
	return func() { debug.SetMemoryLimit(prev) }
}
