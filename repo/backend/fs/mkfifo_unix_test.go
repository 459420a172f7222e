//go:build unix

package fs_test

import "syscall"

// mkfifo creates a named pipe: something in the tree that is not a file.
func mkfifo(path string) error { return syscall.Mkfifo(path, 0o600) }
