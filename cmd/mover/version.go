package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/blockmover/blockmover/repo"
	"github.com/spf13/cobra"
)

// version is set at link time by `make build` (and the image's Dockerfile):
// -ldflags "-X main.version=$(git describe --always --dirty)". It is the
// one package-level variable of this program, an accepted exception to the
// rule against them: the linker can set nothing else, and nothing assigns
// it at run time. Read it through buildVersion.
var version string

// versionInfo is what `mover version` prints.
type versionInfo struct {
	// Version: the -X main.version of the build, else the module version
	// (go install …@v1.2.3), else the VCS revision (12 hex digits, +dirty
	// when the tree was modified), else "unknown".
	Version string `json:"version"`
	// Commit is the full VCS revision the binary was built from, if known.
	Commit string `json:"commit,omitempty"`
	Go     string `json:"go"`
	// RepositoryFormat is the repository format version this mover reads
	// and writes (repo.FormatVersion); it refuses newer ones.
	RepositoryFormat int    `json:"repository_format"`
	Platform         string `json:"platform"`
}

// buildVersion describes this binary from the linker's version and the
// build information the Go toolchain embeds.
func buildVersion() versionInfo {
	return describeBuild(version, debug.ReadBuildInfo)
}

// describeBuild is buildVersion with its inputs given (the tests vary them).
func describeBuild(linked string, read func() (*debug.BuildInfo, bool)) versionInfo {
	v := versionInfo{Version: linked, Go: runtime.Version(), RepositoryFormat: repo.FormatVersion,
		Platform: runtime.GOOS + "/" + runtime.GOARCH}
	var module, dirty string
	if bi, ok := read(); ok {
		if bi.GoVersion != "" {
			v.Go = bi.GoVersion
		}
		if mv := bi.Main.Version; mv != "" && mv != "(devel)" {
			module = mv
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				v.Commit = s.Value
			case "vcs.modified":
				if s.Value == "true" {
					dirty = "+dirty"
				}
			}
		}
	}
	switch {
	case v.Version != "":
	case module != "":
		v.Version = module
	case v.Commit != "":
		v.Version = v.Commit[:min(12, len(v.Commit))] + dirty
	default:
		v.Version = "unknown"
	}
	return v
}

// String is the one line of `mover --version`.
func (v versionInfo) String() string {
	return fmt.Sprintf("mover %s, %s %s, repository format %d", v.label(), v.Go, v.Platform, v.RepositoryFormat)
}

// label is the version with its commit when the version does not name it:
// "v1.2.0 (commit 0123456789ab)". A benchmark report records it.
func (v versionInfo) label() string {
	if v.Commit != "" && !strings.Contains(v.Version, v.Commit[:min(7, len(v.Commit))]) {
		return v.Version + " (commit " + v.Commit[:min(12, len(v.Commit))] + ")"
	}
	return v.Version
}

func newVersionCommand(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print mover's version, Go version and the repository format it reads",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			v := buildVersion()
			if g.json {
				return g.printJSON(v)
			}
			_, err := fmt.Fprintln(g.env.stdout, v)
			return err
		},
	}
}
