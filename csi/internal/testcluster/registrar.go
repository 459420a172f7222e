package testcluster

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"

	"google.golang.org/grpc"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

// registrar registers a CSI driver with the kubelet, as the
// node-driver-registrar sidecar does (it is not served by the Go module
// proxy): it serves the kubelet's plugin registration API
// (k8s.io/kubelet/pkg/apis/pluginregistration/v1) on a socket in the
// kubelet's plugins_registry directory. The kubelet's plugin watcher finds
// the socket, calls GetInfo, dials the driver's endpoint for NodeGetInfo,
// writes the CSINode object and the node's topology labels, and reports the
// outcome with NotifyRegistrationStatus.
type registrar struct {
	registerapi.UnimplementedRegistrationServer
	driver, endpoint string
	srv              *grpc.Server
	served           chan error

	mu     sync.Mutex
	status *registerapi.RegistrationStatus // the kubelet's last report
}

// startRegistrar serves the registration of driver (at the unix socket
// endpoint) in registryDir, the kubelet's <root-dir>/plugins_registry.
func startRegistrar(registryDir, driver, endpoint string) (*registrar, error) {
	if err := os.MkdirAll(registryDir, 0o750); err != nil {
		return nil, fmt.Errorf("registrar: %w", err)
	}
	sock := filepath.Join(registryDir, driver+"-reg.sock")
	if err := os.Remove(sock); err != nil && !os.IsNotExist(err) {
		return nil, fmt.Errorf("registrar: %w", err)
	}
	l, err := net.Listen("unix", sock)
	if err != nil {
		return nil, fmt.Errorf("registrar: %w", err)
	}
	r := &registrar{driver: driver, endpoint: endpoint, srv: grpc.NewServer(), served: make(chan error, 1)}
	registerapi.RegisterRegistrationServer(r.srv, r)
	go func() { r.served <- r.srv.Serve(l) }()
	return r, nil
}

// GetInfo tells the kubelet the driver's name and endpoint.
func (r *registrar) GetInfo(context.Context, *registerapi.InfoRequest) (*registerapi.PluginInfo, error) {
	return &registerapi.PluginInfo{
		Type:              registerapi.CSIPlugin,
		Name:              r.driver,
		Endpoint:          r.endpoint,
		SupportedVersions: []string{"1.0.0"},
	}, nil
}

// NotifyRegistrationStatus records the kubelet's outcome.
func (r *registrar) NotifyRegistrationStatus(_ context.Context, s *registerapi.RegistrationStatus) (*registerapi.RegistrationStatusResponse, error) {
	r.mu.Lock()
	r.status = s
	r.mu.Unlock()
	return &registerapi.RegistrationStatusResponse{}, nil
}

// lastStatus returns the kubelet's last report, nil before the first.
func (r *registrar) lastStatus() *registerapi.RegistrationStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.status
}

// stop ends the server; the kubelet sees the socket go and unregisters
// the driver.
func (r *registrar) stop() {
	r.srv.Stop()
	<-r.served
}
