package csi

import (
	"fmt"

	snapv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	snapclient "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Clients are the Kubernetes API clients every operation of this package
// uses. A control plane that has its own clients (fakes included) fills the
// struct itself; NewClients builds all of them from one *rest.Config.
type Clients struct {
	// Kube reaches the core, batch, storage and authentication APIs.
	Kube kubernetes.Interface
	// Snapshot reaches snapshot.storage.k8s.io/v1 (VolumeSnapshot,
	// VolumeSnapshotContent, VolumeSnapshotClass).
	Snapshot snapclient.Interface
	// Dynamic reaches cbt.storage.k8s.io (SnapshotMetadataService), whose
	// typed client is generated against an older client-go. Only the CBT
	// helpers need it.
	Dynamic dynamic.Interface

	// snapshotTimeoutFrom, set by tests only, makes WaitSnapshotReady's
	// timeout count from its first look at a VolumeSnapshot for which it
	// holds (nil: from the start of the wait), so that a test of what the
	// timeout reports depends on the state being reached, not on how fast
	// a loaded machine's controllers reach it.
	snapshotTimeoutFrom func(*snapv1.VolumeSnapshot) bool
}

// NewClients builds the clients from cfg (rest.InClusterConfig in a pod, a
// kubeconfig elsewhere).
func NewClients(cfg *rest.Config) (*Clients, error) {
	if cfg == nil {
		return nil, fmt.Errorf("%w: nil rest.Config", ErrInvalidArgs)
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	snap, err := snapclient.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("snapshot client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("dynamic client: %w", err)
	}
	return &Clients{Kube: kube, Snapshot: snap, Dynamic: dyn}, nil
}

func (c *Clients) validate() error {
	switch {
	case c == nil:
		return fmt.Errorf("%w: nil Clients", ErrInvalidArgs)
	case c.Kube == nil:
		return fmt.Errorf("%w: missing Clients.Kube", ErrInvalidArgs)
	case c.Snapshot == nil:
		return fmt.Errorf("%w: missing Clients.Snapshot", ErrInvalidArgs)
	}
	return nil
}
