package main

import (
	"os/exec"
	"runtime"
	"strings"
)

// goRoot returns the Go installation's root: real source files and
// binaries, present wherever mover was built.
func goRoot() string {
	if out, err := exec.Command("go", "env", "GOROOT").Output(); err == nil {
		if root := strings.TrimSpace(string(out)); root != "" {
			return root
		}
	}
	return runtime.GOROOT()
}
