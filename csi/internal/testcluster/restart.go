package testcluster

import (
	"context"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"time"
)

// A test that crashes the control plane mid-operation kills a component
// with KillComponents and brings it back with RestartComponents.

// component returns the index of the process named name (its binary's
// name without the version: kube-apiserver, kube-controller-manager,
// kube-scheduler, snapshot-controller, etcd, ...).
func (c *Cluster) component(name string) (int, error) {
	for i, n := range c.names {
		if n == name || strings.HasPrefix(n, name+"-v") {
			return i, nil
		}
	}
	return 0, fmt.Errorf("testcluster: no component %s", name)
}

// KillComponents kills the named components with SIGKILL, as a crash
// would, and waits until they have exited. Until RestartComponents, waits
// of the cluster (ImportImage, DefaultClasses) fail at once.
func (c *Cluster) KillComponents(names ...string) error {
	for _, name := range names {
		i, err := c.component(name)
		if err != nil {
			return err
		}
		c.procs[i].Process.Kill()
		<-c.exited[i]
	}
	return nil
}

// RestartComponents starts the named components, killed by
// KillComponents, again with the same command lines, one after the other,
// each once the one before serves: the API server when it is ready, a
// controller with a --secure-port when its /healthz answers. A controller
// that exits at once (the API server's authorizer not yet caught up, say)
// is started again, up to three times.
func (c *Cluster) RestartComponents(ctx context.Context, names ...string) error {
	for _, name := range names {
		for attempt := 1; ; attempt++ {
			i, err := c.restart(name)
			if err != nil {
				return err
			}
			err = c.waitServing(ctx, i)
			if err == nil {
				break
			}
			select {
			case <-c.exited[i]:
				if attempt < 3 {
					time.Sleep(time.Second)
					continue
				}
			default:
			}
			return fmt.Errorf("restarting %s: %w", name, err)
		}
	}
	return nil
}

// restart starts the exited component name again in its place and
// returns its index.
func (c *Cluster) restart(name string) (int, error) {
	i, err := c.component(name)
	if err != nil {
		return 0, err
	}
	select {
	case <-c.exited[i]:
	default:
		return 0, fmt.Errorf("testcluster: %s is running", name)
	}
	old := c.procs[i]
	cmd := exec.Command(old.Path, old.Args[1:]...)
	cmd.Env, cmd.Dir = old.Env, old.Dir
	if err := c.startCmd(cmd, c.names[i]); err != nil {
		return 0, err
	}
	// startCmd appended the new process: it takes the old one's place,
	// its log following the old one's.
	last := len(c.procs) - 1
	c.mu.Lock()
	c.logs[last].b = append(append(append([]byte(nil), c.logs[i].b...), "--- restarted ---\n"...), c.logs[last].b...)
	c.mu.Unlock()
	c.procs[i], c.exited[i], c.logs[i] = c.procs[last], c.exited[last], c.logs[last]
	c.procs, c.exited, c.logs, c.names = c.procs[:last], c.exited[:last], c.logs[:last], c.names[:last]
	return i, nil
}

// waitServing waits until component i serves (see RestartComponents), or
// exits, or a minute passes.
func (c *Cluster) waitServing(ctx context.Context, i int) error {
	url, token := "", ""
	if strings.HasPrefix(c.names[i], "kube-apiserver") {
		url, token = c.Config.Host+"/readyz", c.Config.BearerToken
	}
	for _, a := range c.procs[i].Args {
		if port, ok := strings.CutPrefix(a, "--secure-port="); ok && url == "" {
			url = "https://127.0.0.1:" + port + "/healthz"
		}
	}
	if url == "" {
		return nil
	}
	hc := &http.Client{Transport: insecureTransport(), Timeout: 2 * time.Second}
	deadline := time.Now().Add(time.Minute)
	for {
		req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := hc.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("%s: %s", url, resp.Status)
		}
		select {
		case <-c.exited[i]:
			return fmt.Errorf("%s exited (%v)", c.names[i], c.procs[i].ProcessState)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not serving after a minute: %w", err)
		}
	}
}
