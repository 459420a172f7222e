package testdriver

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/kubernetes-csi/csi-test/v5/pkg/sanity"
)

// sanityEnv names the access type a child process runs csi-sanity for.
const sanityEnv = "TESTDRIVER_SANITY_ACCESS_TYPE"

// TestSanity runs csi-sanity (csi-test/v5 pkg/sanity) against the driver
// with real loop devices and mounts, once with Mount volumes (ext4) and
// once with Block volumes. Ginkgo runs its specs once per process, so each
// run is a child process of this test binary.
func TestSanity(t *testing.T) {
	needRoot(t)
	if at := os.Getenv(sanityEnv); at != "" {
		runSanity(t, at)
		return
	}
	summary := regexp.MustCompile(`(?m)^(Ran \d+ of \d+ Specs.*|.*\d+ Passed \| \d+ Failed \| \d+ Pending \| \d+ Skipped.*)$`)
	for _, at := range []string{"mount", "block"} {
		t.Run(at, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestSanity$", "-test.count=1", "-ginkgo.no-color")
			cmd.Env = append(os.Environ(), sanityEnv+"="+at)
			out, err := cmd.CombinedOutput()
			for _, line := range summary.FindAllString(string(out), -1) {
				t.Log(strings.TrimSpace(line))
			}
			if err != nil {
				t.Fatalf("csi-sanity with %s volumes: %v\n%s", at, err, out)
			}
		})
	}
}

func runSanity(t *testing.T, accessType string) {
	c := startDriver(t, Config{})
	dir := t.TempDir()
	cfg := sanity.NewTestConfig()
	cfg.Address = c.sock
	cfg.TargetPath = filepath.Join(dir, "target")
	cfg.StagingPath = filepath.Join(dir, "staging")
	cfg.TestVolumeSize = 64 << 20
	cfg.TestVolumeAccessType = accessType
	sanity.Test(t, cfg)
}
