package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/blockmover/blockmover/repo/backend/location"
	"golang.org/x/sys/unix"
)

// Peer describes a peer tool: whether it ran, its version, and why not.
type Peer struct {
	Name      string `json:"name"`
	Available bool   `json:"available"`
	Version   string `json:"version,omitempty"`
	Note      string `json:"note,omitempty"`
	// SparseRestore: the peer's restore writes holes where the volume has
	// zeros (restic ≥ 0.15 with --sparse), as mover's import does.
	SparseRestore bool `json:"sparse_restore,omitempty"`
}

// detectPeer finds a peer tool and its version, and whether it can run
// the benchmark cfg describes.
func detectPeer(ctx context.Context, name string, cfg *Config) Peer {
	p := Peer{Name: name}
	path, err := exec.LookPath(peerPath(name))
	if err != nil {
		switch name {
		case "restic":
			p.Note = "not installed (make tools builds restic v0.19.1)"
		case "kopia":
			p.Note = "not installed (make tools builds kopia v0.22.3; Debian packages no kopia)"
		}
		return p
	}
	out, err := exec.CommandContext(ctx, path, "--version").CombinedOutput()
	if name == "restic" {
		out, err = exec.CommandContext(ctx, path, "version").CombinedOutput()
	}
	if err != nil {
		p.Note = fmt.Sprintf("%s does not run: %s", path, lastLine(string(out)))
		return p
	}
	p.Version = lastLine(string(out))
	if name == "kopia" && (location.IsS3(cfg.Repo) || cfg.Device != "") {
		p.Note = "mover bench runs kopia on image files and directory repositories only"
		return p
	}
	p.Available = true
	if name == "restic" {
		help, _ := exec.CommandContext(ctx, path, "restore", "--help").CombinedOutput()
		p.SparseRestore = bytes.Contains(help, []byte("--sparse"))
		if !p.SparseRestore {
			p.Note = "its restore has no --sparse (added in 0.15): it writes the zeros that mover's import leaves as holes"
		}
	}
	return p
}

// pinnedPeers are the peer versions make tools builds (hack/install-peers.sh)
// into Go's bin directory as NAME-VERSION.
var pinnedPeers = map[string]string{"restic": "restic-v0.19.1", "kopia": "kopia-v0.22.3"}

// peerPath is the pinned build of a peer when it is installed, else its
// name, found on PATH.
func peerPath(name string) string {
	bin := os.Getenv("GOBIN")
	if bin == "" {
		if gopath, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
			bin = filepath.Join(strings.SplitN(strings.TrimSpace(string(gopath)), string(os.PathListSeparator), 2)[0], "bin")
		}
	}
	if pinned, ok := pinnedPeers[name]; ok && bin != "" {
		p := filepath.Join(bin, pinned)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	return name
}

// peerCommand runs a peer tool with its password in the environment.
func peerCommand(ctx context.Context, env []string, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, peerPath(name), args...)
	cmd.Env = append(os.Environ(), env...)
	return cmd
}

// syncFile fdatasyncs a restored file: mover makes its target durable
// before it reports success, so a peer's restore is timed with the same
// flush.
func syncFile(path string) (float64, error) {
	t := time.Now()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	if err := unix.Fdatasync(int(f.Fd())); err != nil {
		return 0, fmt.Errorf("fdatasync %s: %w", path, err)
	}
	return since(t), nil
}

// runRestic runs one round of restic: a first backup, a backup of the
// changed volume (restic reads everything again and stores what is new)
// and a restore of the first snapshot onto a new file, synced. restic has
// no incremental restore onto a target that holds an earlier snapshot.
func (r *runner) runRestic(ctx context.Context, round int, peer Peer) error {
	loc := r.location(round, "restic")
	defer r.removeLocation(context.WithoutCancel(ctx), loc)
	cache := filepath.Join(r.cfg.Work, fmt.Sprintf("restic-cache-r%d", round+1))
	defer os.RemoveAll(cache)
	repoArg, extra := loc, []string(nil)
	if location.IsS3(loc) {
		var err error
		if repoArg, extra, err = resticS3(loc, r.cfg.S3); err != nil {
			return err
		}
	}
	env := []string{"RESTIC_PASSWORD=" + benchPassword}
	restic := func(args ...string) *exec.Cmd {
		all := append([]string{"-r", repoArg, "--cache-dir", cache}, extra...)
		return peerCommand(ctx, env, "restic", append(all, args...)...)
	}
	if _, _, _, err := runMeasured(restic("init")); err != nil {
		return fmt.Errorf("restic init: %w", err)
	}
	device := r.cfg.Device != ""
	repoBytes := r.locationBytes(ctx, loc)
	backup := func(op Op) (string, Sample, error) {
		if err := r.prepareRead(); err != nil {
			return "", Sample{}, err
		}
		cmd := restic("--json", "-q", "backup", r.source)
		if device {
			// A device is read through stdin (restic 0.14 stores a device
			// node, not its contents); when it is larger than the scenario,
			// only the scenario's bytes, copied through a pipe.
			f, err := os.Open(r.source)
			if err != nil {
				return "", Sample{}, err
			}
			defer f.Close()
			cmd = restic("--json", "-q", "backup", "--stdin", "--stdin-filename", "volume.img")
			cmd.Stdin = f
			if n, err := f.Seek(0, io.SeekEnd); err != nil || n != r.base.Size() {
				f.Seek(0, io.SeekStart)
				cmd.Stdin = io.LimitReader(f, r.base.Size())
			} else {
				f.Seek(0, io.SeekStart)
			}
		}
		out, u, secs, err := runMeasured(cmd)
		if err != nil {
			return "", Sample{}, fmt.Errorf("restic backup (%s): %w", op, err)
		}
		var sum struct {
			SnapshotID string `json:"snapshot_id"`
		}
		lines := bytes.Split(bytes.TrimSpace(out), []byte("\n"))
		if err := json.Unmarshal(lines[len(lines)-1], &sum); err != nil || sum.SnapshotID == "" {
			return "", Sample{}, fmt.Errorf("restic backup (%s): no snapshot in its output", op)
		}
		// Stored: what the repository grew by (restic's data_added counts
		// bytes before compression).
		after := r.locationBytes(ctx, loc)
		s := Sample{Seconds: secs, UserCPU: u.user.Seconds(), SysCPU: u.sys.Seconds(), PeakRSS: u.maxRSS,
			StoredBytes: after - repoBytes, RepoBytes: after}
		repoBytes = after
		return sum.SnapshotID, s, nil
	}
	first, s, err := backup(FullExport)
	if err != nil {
		return err
	}
	if r.ops[FullExport] {
		r.record("restic", "", FullExport, s)
	}
	if r.ops[IncrementalExport] {
		if err := r.changeSource(ctx, false); err != nil {
			return err
		}
		_, s, err := backup(IncrementalExport)
		if rerr := r.changeSource(context.WithoutCancel(ctx), true); err == nil {
			err = rerr
		}
		if err != nil {
			return err
		}
		r.record("restic", "", IncrementalExport, s)
	}
	if !r.ops[FullImport] {
		return nil
	}
	var cmd *exec.Cmd
	var restored string
	if device {
		f, err := os.OpenFile(r.source, os.O_WRONLY|os.O_EXCL, 0)
		if err != nil {
			return err
		}
		defer f.Close()
		cmd = restic("-q", "dump", first, "/volume.img")
		cmd.Stdout = f
		restored = r.source
	} else {
		dir := filepath.Join(r.cfg.Work, "restic-restore")
		os.RemoveAll(dir)
		defer os.RemoveAll(dir)
		cmd = restic("-q", "restore", first, "--target", dir)
		if peer.SparseRestore {
			cmd.Args = append(cmd.Args, "--sparse")
		}
		restored = filepath.Join(dir, r.source)
	}
	_, u, secs, err := runMeasured(cmd)
	if err != nil {
		return fmt.Errorf("restic restore: %w", err)
	}
	sync, err := syncFile(restored)
	if err != nil {
		return fmt.Errorf("restic restore: %w", err)
	}
	r.record("restic", "", FullImport, Sample{Seconds: secs + sync, ReturnedSeconds: secs, UserCPU: u.user.Seconds(), SysCPU: u.sys.Seconds(), PeakRSS: u.maxRSS})
	return r.verify(ctx, round, restored, r.base, "restic restore")
}

// runKopia runs one round of kopia like runRestic: first snapshot,
// snapshot of the changed volume, restore of the first onto a new file.
// Compression is set to zstd-fastest, mover's default (kopia compresses
// nothing by default). It needs an image file and a directory repository.
func (r *runner) runKopia(ctx context.Context, round int) error {
	loc := r.location(round, "kopia")
	defer r.removeLocation(context.WithoutCancel(ctx), loc)
	dir := filepath.Join(r.cfg.Work, fmt.Sprintf("kopia-r%d", round+1))
	defer os.RemoveAll(dir)
	if err := os.MkdirAll(loc, 0o700); err != nil {
		return err
	}
	env := []string{"KOPIA_PASSWORD=" + benchPassword, "KOPIA_CHECK_FOR_UPDATES=false"}
	kopia := func(args ...string) *exec.Cmd {
		return peerCommand(ctx, env, "kopia", append(args, "--config-file", filepath.Join(dir, "repository.config"))...)
	}
	for _, args := range [][]string{
		{"repository", "create", "filesystem", "--path", loc, "--cache-directory", filepath.Join(dir, "cache")},
		{"policy", "set", "--global", "--compression", "zstd-fastest"},
	} {
		if _, _, _, err := runMeasured(kopia(args...)); err != nil {
			return fmt.Errorf("kopia %s: %w", strings.Join(args[:2], " "), err)
		}
	}
	repoBytes := r.locationBytes(ctx, loc)
	snapshot := func(op Op) (string, Sample, error) {
		if err := r.prepareRead(); err != nil {
			return "", Sample{}, err
		}
		_, u, secs, err := runMeasured(kopia("snapshot", "create", r.source))
		if err != nil {
			return "", Sample{}, fmt.Errorf("kopia snapshot create (%s): %w", op, err)
		}
		out, _, _, err := runMeasured(kopia("snapshot", "list", r.source, "--json"))
		if err != nil {
			return "", Sample{}, fmt.Errorf("kopia snapshot list: %w", err)
		}
		var snaps []struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal(out, &snaps); err != nil || len(snaps) == 0 {
			return "", Sample{}, fmt.Errorf("kopia snapshot list: no snapshot in its output")
		}
		after := r.locationBytes(ctx, loc)
		s := Sample{Seconds: secs, UserCPU: u.user.Seconds(), SysCPU: u.sys.Seconds(), PeakRSS: u.maxRSS,
			StoredBytes: after - repoBytes, RepoBytes: after}
		repoBytes = after
		return snaps[len(snaps)-1].ID, s, nil
	}
	first, s, err := snapshot(FullExport)
	if err != nil {
		return err
	}
	if r.ops[FullExport] {
		r.record("kopia", "", FullExport, s)
	}
	if r.ops[IncrementalExport] {
		if err := r.changeSource(ctx, false); err != nil {
			return err
		}
		_, s, err := snapshot(IncrementalExport)
		if rerr := r.changeSource(context.WithoutCancel(ctx), true); err == nil {
			err = rerr
		}
		if err != nil {
			return err
		}
		r.record("kopia", "", IncrementalExport, s)
	}
	if !r.ops[FullImport] {
		return nil
	}
	target := filepath.Join(dir, "restored.img")
	_, u, secs, err := runMeasured(kopia("snapshot", "restore", "--write-sparse-files", first, target))
	if err != nil {
		return fmt.Errorf("kopia snapshot restore: %w", err)
	}
	sync, err := syncFile(target)
	if err != nil {
		return fmt.Errorf("kopia snapshot restore: %w", err)
	}
	r.record("kopia", "", FullImport, Sample{Seconds: secs + sync, ReturnedSeconds: secs, UserCPU: u.user.Seconds(), SysCPU: u.sys.Seconds(), PeakRSS: u.maxRSS})
	return r.verify(ctx, round, target, r.base, "kopia restore")
}
