// Command pause is the sandbox ("pause") container of the test cluster's
// pods: it holds the pod's namespaces and sleeps until SIGTERM or SIGINT,
// as registry.k8s.io/pause does, and reaps any zombie handed to it as the
// pod's PID 1. testcluster builds it static and packs it into an image with
// hack/tools/imagebuild; nothing is pulled.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			return
		}
		for {
			var ws syscall.WaitStatus
			if pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil); pid <= 0 || err != nil {
				break
			}
		}
	}
}
