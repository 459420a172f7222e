//go:build !linux

package s3

import "os/exec"

// setPdeathsig is Linux-only; elsewhere the cleanups stop the server.
func setPdeathsig(*exec.Cmd) {}
