package testdriver

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Fault injection for tests of what drives the driver (the snapshot
// controller, the csi-snapshotter, the orchestration above them): a file
// StateDir/faults/METHOD holding "CODE COUNT" makes the next COUNT calls of
// METHOD fail with the gRPC code CODE (its name, e.g. DeadlineExceeded),
// or every call with COUNT "always". CODE NotReady, for CreateSnapshot,
// makes the call succeed with ready_to_use false: a snapshot cut but still
// being processed (uploaded, say), which the csi-snapshotter polls by
// calling again. The file is read at each call, so a test sets and clears
// faults in a driver running in another process. Only CreateSnapshot
// consults it.

// FaultFile is the file that injects faults into method.
func FaultFile(stateDir, method string) string {
	return filepath.Join(stateDir, "faults", method)
}

// InjectFault makes the next count calls of method fail with code (count
// < 0: every call until ClearFault).
func InjectFault(stateDir, method string, code codes.Code, count int) error {
	n := strconv.Itoa(count)
	if count < 0 {
		n = "always"
	}
	f := FaultFile(stateDir, method)
	if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
		return err
	}
	return os.WriteFile(f, []byte(code.String()+" "+n+"\n"), 0o644)
}

// NotReady is the fault "code" of InjectNotReady.
const NotReady = "NotReady"

// errNotReady is what injected returns for a NotReady fault.
var errNotReady = errors.New("testdriver: injected NotReady")

// InjectNotReady makes the next count CreateSnapshot calls (count < 0:
// every call until ClearFault) answer with the snapshot not ready to use.
func InjectNotReady(stateDir string, count int) error {
	n := strconv.Itoa(count)
	if count < 0 {
		n = "always"
	}
	f := FaultFile(stateDir, "CreateSnapshot")
	if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
		return err
	}
	return os.WriteFile(f, []byte(NotReady+" "+n+"\n"), 0o644)
}

// ClearFault removes method's fault.
func ClearFault(stateDir, method string) error {
	if err := os.Remove(FaultFile(stateDir, method)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// injected returns the fault of this call of method, or nil. The caller
// holds d.mu, which orders the read and the rewrite of the count.
func (d *Driver) injected(method string) error {
	f := FaultFile(d.cfg.StateDir, method)
	b, err := os.ReadFile(f)
	if err != nil {
		return nil
	}
	name, count, ok := strings.Cut(strings.TrimSpace(string(b)), " ")
	code, known := codeByName(name)
	known = known || name == NotReady
	if !ok || !known {
		return status.Errorf(codes.Internal, "testdriver: malformed fault file %s: %q", f, b)
	}
	if count != "always" {
		n, err := strconv.Atoi(count)
		if err != nil || n <= 0 {
			return nil
		}
		if err := os.WriteFile(f, []byte(fmt.Sprintf("%s %d\n", name, n-1)), 0o644); err != nil {
			return status.Errorf(codes.Internal, "testdriver: %v", err)
		}
	}
	if name == NotReady {
		return errNotReady
	}
	return status.Errorf(code, "injected fault (%s)", f)
}

func codeByName(name string) (codes.Code, bool) {
	for c := codes.OK; c <= codes.Unauthenticated; c++ {
		if c.String() == name {
			return c, true
		}
	}
	return 0, false
}
