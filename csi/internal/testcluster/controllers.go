package testcluster

import (
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"
)

// Versions of the CSI sidecars and the container runtime that
// hack/install-cluster-tools.sh builds (pinned by the go.mod of
// hack/tools/snapshotter, provisioner, snapshot-metadata, containerd and
// runc; a test checks that these agree).
const (
	SnapshotterVersion      = "v8.7.0" // snapshot-controller, csi-snapshotter
	ProvisionerVersion      = "v6.4.0" // csi-provisioner
	SnapshotMetadataVersion = "v0.2.0" // csi-snapshot-metadata
	ContainerdVersion       = "v2.4.2" // containerd, ctr, containerd-shim-runc-v2
	RuncVersion             = "v1.5.2" // runc
)

// ErrNoClusterTools is returned when a binary of
// hack/install-cluster-tools.sh is not installed.
var ErrNoClusterTools = errors.New("cluster test binaries not found")

// ClusterTool returns the path of the pinned binary name (for example
// "kube-controller-manager", "kubectl", "csi-snapshotter"), built by
// hack/install-cluster-tools.sh (make cluster-tools).
func ClusterTool(name string) (string, error) {
	versions := map[string]string{
		"kube-controller-manager": KubernetesVersion,
		"kube-scheduler":          KubernetesVersion,
		"kubectl":                 KubernetesVersion,
		"kubelet":                 KubernetesVersion,
		"snapshot-controller":     SnapshotterVersion,
		"csi-snapshotter":         SnapshotterVersion,
		"csi-provisioner":         ProvisionerVersion,
		"csi-snapshot-metadata":   SnapshotMetadataVersion,
		"containerd":              ContainerdVersion,
		"ctr":                     ContainerdVersion,
		"containerd-shim-runc-v2": ContainerdVersion,
		"runc":                    RuncVersion,
	}
	v, ok := versions[name]
	if !ok {
		return "", fmt.Errorf("testcluster: unknown tool %q", name)
	}
	dir, err := toolsDir()
	if err != nil {
		return "", err
	}
	p := filepath.Join(dir, name+"-"+v)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("%w: %s is missing; run `make cluster-tools` (hack/install-cluster-tools.sh)", ErrNoClusterTools, p)
	}
	return p, nil
}

func controllerBinaries() (map[string]string, error) {
	bins := map[string]string{}
	for _, n := range []string{"kube-controller-manager", "kube-scheduler", "snapshot-controller"} {
		p, err := ClusterTool(n)
		if err != nil {
			return nil, err
		}
		bins[n] = p
	}
	return bins, nil
}

//go:embed rbac-snapshot-controller.yaml
var snapshotControllerRBAC []byte

// startControllers runs kube-controller-manager, kube-scheduler and
// snapshot-controller, each with a kubeconfig of its own (a client
// certificate of this cluster's CA), and waits until they serve.
func (c *Cluster) startControllers(ctx context.Context, bins map[string]string) error {
	crds, err := SnapshotCRDs()
	if err != nil {
		return err
	}
	if err := c.InstallCRDs(ctx, crds...); err != nil {
		return err
	}
	if err := c.apply(ctx, snapshotControllerRBAC, "kube-system"); err != nil {
		return fmt.Errorf("snapshot-controller RBAC: %w", err)
	}
	ports, err := freePorts(2)
	if err != nil {
		return err
	}

	// kube-controller-manager: every default controller, each with its
	// own ServiceAccount's credentials (as kubeadm runs it); the token
	// controller signs with the API server's ServiceAccount key, the
	// root-ca-cert-publisher publishes this CA as kube-root-ca.crt.
	kc, err := c.pki.kubeconfig("kube-controller-manager", c.Config.Host, "system:kube-controller-manager")
	if err != nil {
		return err
	}
	if err := c.start(bins["kube-controller-manager"],
		"--kubeconfig="+kc, "--authentication-kubeconfig="+kc, "--authorization-kubeconfig="+kc,
		"--bind-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", ports[0]),
		"--controllers=*",
		"--use-service-account-credentials=true",
		"--service-account-private-key-file="+c.saKey,
		"--root-ca-file="+c.pki.CAFile,
		"--cluster-signing-cert-file="+c.pki.CAFile, "--cluster-signing-key-file="+c.pki.KeyFile,
		"--leader-elect=false",
		"--v=1"); err != nil {
		return err
	}

	kc, err = c.pki.kubeconfig("kube-scheduler", c.Config.Host, "system:kube-scheduler")
	if err != nil {
		return err
	}
	if err := c.start(bins["kube-scheduler"],
		"--kubeconfig="+kc, "--authentication-kubeconfig="+kc, "--authorization-kubeconfig="+kc,
		"--bind-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", ports[1]),
		"--leader-elect=false",
		"--v=1"); err != nil {
		return err
	}

	// snapshot-controller as the ServiceAccount its upstream RBAC binds:
	// the API server takes a client certificate's CN as the user name, and
	// RBAC matches a ServiceAccount subject by that name.
	kc, err = c.pki.kubeconfig("snapshot-controller", c.Config.Host,
		"system:serviceaccount:kube-system:snapshot-controller", "system:serviceaccounts", "system:serviceaccounts:kube-system")
	if err != nil {
		return err
	}
	if err := c.start(bins["snapshot-controller"], "--kubeconfig="+kc, "--leader-election=false", "--v=4"); err != nil {
		return err
	}

	for _, port := range ports {
		if err := c.waitHealthy(ctx, fmt.Sprintf("https://127.0.0.1:%d/healthz", port), "", time.Minute); err != nil {
			return err
		}
	}
	return nil
}

// waitHealthy polls url (the apiserver's /readyz with token, a
// controller's /healthz, which answers anyone) until it answers 200, or a
// process of the cluster exits, or limit passes.
func (c *Cluster) waitHealthy(ctx context.Context, url, token string, limit time.Duration) error {
	hc := &http.Client{Transport: insecureTransport(), Timeout: 2 * time.Second}
	deadline := time.Now().Add(limit)
	var last string
	for time.Now().Before(deadline) {
		if err := c.exitedProcess(); err != nil {
			return err
		}
		req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := hc.Do(req)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, b)
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s not healthy after %v: %s", url, limit, last)
}

// SnapshotCRDs are the CRD files of the VolumeSnapshot and the
// VolumeGroupSnapshot v1 APIs, shipped in the external-snapshotter client
// module that the main module requires (located with the go command).
func SnapshotCRDs() ([]string, error) {
	const mod = "github.com/kubernetes-csi/external-snapshotter/client/v8"
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", mod).Output()
	dir := strings.TrimSpace(string(out))
	if err != nil || dir == "" {
		out, err = exec.Command("go", "mod", "download", "-json", mod).Output()
		if err != nil {
			return nil, fmt.Errorf("locating %s: %w", mod, err)
		}
		for _, l := range strings.Split(string(out), "\n") {
			if k, v, ok := strings.Cut(strings.TrimSpace(l), ":"); ok && k == `"Dir"` {
				dir = strings.Trim(strings.TrimSpace(v), `",`)
			}
		}
	}
	var files []string
	for _, n := range []string{
		"snapshot.storage.k8s.io_volumesnapshotclasses", "snapshot.storage.k8s.io_volumesnapshotcontents", "snapshot.storage.k8s.io_volumesnapshots",
		"groupsnapshot.storage.k8s.io_volumegroupsnapshotclasses", "groupsnapshot.storage.k8s.io_volumegroupsnapshotcontents", "groupsnapshot.storage.k8s.io_volumegroupsnapshots",
	} {
		files = append(files, filepath.Join(dir, "config", "crd", n+".yaml"))
	}
	return files, nil
}

// apply creates the ServiceAccounts and RBAC objects of a YAML stream,
// namespaced ones without a namespace in ns.
func (c *Cluster) apply(ctx context.Context, manifest []byte, ns string) error {
	dyn, err := dynamic.NewForConfig(c.Config)
	if err != nil {
		return err
	}
	rbac := func(r string) schema.GroupVersionResource {
		return schema.GroupVersionResource{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: r}
	}
	gvrs := map[string]struct {
		gvr        schema.GroupVersionResource
		namespaced bool
	}{
		"ServiceAccount":     {schema.GroupVersionResource{Version: "v1", Resource: "serviceaccounts"}, true},
		"Role":               {rbac("roles"), true},
		"RoleBinding":        {rbac("rolebindings"), true},
		"ClusterRole":        {rbac("clusterroles"), false},
		"ClusterRoleBinding": {rbac("clusterrolebindings"), false},
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(manifest), 4096)
	for {
		var u unstructured.Unstructured
		if err := dec.Decode(&u.Object); err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
		if len(u.Object) == 0 {
			continue
		}
		k, ok := gvrs[u.GetKind()]
		if !ok {
			return fmt.Errorf("apply: unexpected kind %q", u.GetKind())
		}
		var ri dynamic.ResourceInterface = dyn.Resource(k.gvr)
		if k.namespaced {
			if u.GetNamespace() == "" {
				u.SetNamespace(ns)
			}
			ri = dyn.Resource(k.gvr).Namespace(u.GetNamespace())
		}
		if _, err := ri.Create(ctx, &u, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("%s %s: %w", u.GetKind(), u.GetName(), err)
		}
	}
}

// Kubeconfig writes a kubeconfig for user (and groups) with a client
// certificate of this cluster's CA, named name.kubeconfig in the
// cluster's directory, for a component a test starts itself.
func (c *Cluster) Kubeconfig(name, user string, groups ...string) (string, error) {
	return c.pki.kubeconfig(name, c.Config.Host, user, groups...)
}

//go:embed rbac-csi-snapshotter.yaml
var csiSnapshotterRBAC []byte

// StartCSISnapshotter runs csi-snapshotter (hack/install-cluster-tools.sh)
// against the CSI driver on the unix socket csiAddress, as the
// ServiceAccount default/csi-snapshotter that its upstream RBAC binds. It
// is a process of the cluster: Stop ends it.
func (c *Cluster) StartCSISnapshotter(ctx context.Context, csiAddress string) error {
	bin, err := ClusterTool("csi-snapshotter")
	if err != nil {
		return err
	}
	if err := c.apply(ctx, csiSnapshotterRBAC, "default"); err != nil {
		return fmt.Errorf("csi-snapshotter RBAC: %w", err)
	}
	kc, err := c.pki.kubeconfig("csi-snapshotter", c.Config.Host,
		"system:serviceaccount:default:csi-snapshotter", "system:serviceaccounts", "system:serviceaccounts:default")
	if err != nil {
		return err
	}
	return c.start(bin, "--kubeconfig="+kc, "--csi-address="+csiAddress, "--leader-election=false", "--v=2")
}
