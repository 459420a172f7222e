package main

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
)

// goSourceTree returns $GOROOT/src: real source files, about 2.6×
// compressible, present wherever mover was built.
func goSourceTree() string {
	if out, err := exec.Command("go", "env", "GOROOT").Output(); err == nil {
		if root := strings.TrimSpace(string(out)); root != "" {
			return filepath.Join(root, "src")
		}
	}
	return filepath.Join(runtime.GOROOT(), "src")
}
