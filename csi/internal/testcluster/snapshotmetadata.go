package testcluster

import (
	"context"
	_ "embed"
	"encoding/base64"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/blockmover/blockmover/csi/internal/testdriver"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
)

//go:embed rbac-csi-snapshot-metadata.yaml
var csiSnapshotMetadataRBAC []byte

// SnapshotMetadataAudience is the audience of the test driver's
// SnapshotMetadataService: a client's token must be for it.
const SnapshotMetadataAudience = "blockmover-test-snapshot-metadata"

// snapshotMetadataGVR is the version of the SnapshotMetadataService that
// csi-snapshot-metadata v0.2.0 reads.
var snapshotMetadataGVR = schema.GroupVersionResource{Group: "cbt.storage.k8s.io", Version: "v1alpha1", Resource: "snapshotmetadataservices"}

// startSnapshotMetadata runs the csi-snapshot-metadata sidecar against the
// driver on csiSock, as the ServiceAccount default/csi-snapshot-metadata
// of its upstream RBAC, serving TLS with a certificate of this cluster's
// CA on a free port (it listens on every address of the host's network
// namespace), waits until it answers, and advertises it to the pods, at a
// proxy on the pod network's gateway, in the driver's
// SnapshotMetadataService (the CRD of csi/testdata/crd), as a driver's
// deployment does with its Service.
func (c *Cluster) startSnapshotMetadata(ctx context.Context, bin, csiSock string) error {
	gomod, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return fmt.Errorf("go env GOMOD: %w", err)
	}
	crd := filepath.Join(filepath.Dir(strings.TrimSpace(string(gomod))), "csi", "testdata", "crd", "cbt.storage.k8s.io_snapshotmetadataservices.yaml")
	if err := c.InstallCRDs(ctx, crd); err != nil {
		return err
	}
	if err := c.apply(ctx, csiSnapshotMetadataRBAC, "default"); err != nil {
		return fmt.Errorf("csi-snapshot-metadata RBAC: %w", err)
	}
	kc, err := c.pki.kubeconfig("csi-snapshot-metadata", c.Config.Host,
		"system:serviceaccount:default:csi-snapshot-metadata", "system:serviceaccounts", "system:serviceaccounts:default")
	if err != nil {
		return err
	}
	cert, key, err := c.pki.serving("csi-snapshot-metadata-serving")
	if err != nil {
		return err
	}
	ports, err := freePorts(1)
	if err != nil {
		return err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", ports[0])
	if err := c.start(bin, "--kubeconfig="+kc, "--csi-address="+csiSock, fmt.Sprintf("--port=%d", ports[0]),
		"--tls-cert="+cert, "--tls-key="+key, "--http-endpoint=", "--v=2"); err != nil {
		return err
	}
	if err := c.waitFor(ctx, 30*time.Second, "csi-snapshot-metadata on "+addr, func() error {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return err
		}
		return conn.Close()
	}); err != nil {
		return err
	}
	c.snapshotMetadataAddr = addr
	// The pods (the mover Job's CBT init container) reach it at the pod
	// network's gateway.
	podAddr, err := c.ProxyToPods(addr)
	if err != nil {
		return err
	}
	dyn, err := dynamic.NewForConfig(c.Config)
	if err != nil {
		return err
	}
	sms := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": snapshotMetadataGVR.GroupVersion().String(), "kind": "SnapshotMetadataService",
		"metadata": map[string]any{"name": testdriver.DefaultName},
		"spec": map[string]any{"address": podAddr, "audience": SnapshotMetadataAudience,
			"caCert": base64.StdEncoding.EncodeToString(c.pki.CAPEM())},
	}}
	if _, err := dyn.Resource(snapshotMetadataGVR).Create(ctx, sms, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("SnapshotMetadataService %s: %w", testdriver.DefaultName, err)
	}
	return nil
}

// SnapshotMetadataAddr is where the csi-snapshot-metadata sidecar listens
// on the host's loopback ("" without Options.Kubelet). The driver's
// SnapshotMetadataService advertises the address the pods reach it at;
// a test on the host dials this one, with the same certificate (it names
// 127.0.0.1 too).
func (c *Cluster) SnapshotMetadataAddr() string { return c.snapshotMetadataAddr }
