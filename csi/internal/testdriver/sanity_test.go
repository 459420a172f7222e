package testdriver

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/kubernetes-csi/csi-test/v5/pkg/sanity"
	"github.com/onsi/ginkgo/v2"
	"github.com/onsi/gomega"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
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
	cfg.TargetPath = filepath.Join(dir, "target")
	cfg.StagingPath = filepath.Join(dir, "staging")
	cfg.TestVolumeSize = 64 << 20
	cfg.TestVolumeAccessType = accessType
	// csi-test v5.4.0 connects with a race: when the connection is Ready
	// before its first look, it waits a minute for a change and fails
	// ("Connection timed out"; fixed in v5.6.0, which needs a newer gRPC
	// than the module's). So hand it a connection: with Address empty,
	// Setup reuses the one in the TestContext.
	conn, err := grpc.NewClient("unix://"+c.sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	sc := sanity.GinkgoTest(&cfg)
	sc.Conn, sc.ControllerConn = conn, conn
	gomega.RegisterFailHandler(ginkgo.Fail)
	ginkgo.RunSpecs(t, "CSI Driver Test Suite")
	sc.Finalize() // closes conn
}
