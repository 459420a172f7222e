//go:build !unix

package fs_test

import "os"

// mkfifo stands in for a named pipe with a directory where there are none.
func mkfifo(path string) error { return os.Mkdir(path, 0o700) }
