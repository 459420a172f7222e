//go:build !linux

package s3test

import "os/exec"

// setPdeathsig is Linux-only; elsewhere the cleanups stop the server.
func setPdeathsig(*exec.Cmd) {}
