package main

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/blockmover/blockmover/csi"
	"github.com/blockmover/blockmover/internal/units"
	"github.com/blockmover/blockmover/repo"
	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/client-go/tools/clientcmd"
)

// defaultImage is the mover image `mover k8s` runs unless --image says.
const defaultImage = "blockmover/mover:latest"

// k8sOptions are the flags every `mover k8s` command shares.
type k8sOptions struct {
	kubeconfig, context, namespace string
	operation                      string
	image, pullPolicy              string
	secret, serviceAccount         string
	cpu, memory                    string
	nodeSelector                   []string
	jobArgs                        []string
	deadline, timeout, snapTimeout time.Duration
	backoff                        int32
	keep, allowModeChange          bool
	metricsPort                    int32
}

// registerCluster adds the flags that say which cluster and namespace.
func (o *k8sOptions) registerCluster(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file (default $KUBECONFIG, ~/.kube/config, or the pod's in-cluster config)")
	f.StringVar(&o.context, "context", "", "kubeconfig context (default: the current one)")
	f.StringVarP(&o.namespace, "namespace", "n", "", "namespace (default: the context's)")
}

// register adds the cluster flags and those that shape the mover Job.
func (o *k8sOptions) register(cmd *cobra.Command) {
	o.registerCluster(cmd)
	f := cmd.Flags()
	f.StringVar(&o.operation, "operation", "", "operation ID tying the objects together; a rerun with the same ID resumes (default: derived from the PVC)")
	f.StringVar(&o.image, "image", defaultImage, "mover image for the Job")
	f.StringVar(&o.pullPolicy, "image-pull-policy", "", "Always, IfNotPresent or Never (default: Kubernetes')")
	f.StringVar(&o.secret, "secret", "", "Secret with MOVER_PASSWORD (and MOVER_REPOSITORY, AWS_* as needed) for the Job (required)")
	f.StringVar(&o.serviceAccount, "service-account", "", "ServiceAccount of the Job's pod (default: the namespace's default)")
	f.StringVar(&o.cpu, "cpu", "", "CPU request and limit of the mover, e.g. 2")
	f.StringVar(&o.memory, "memory", "", "memory request and limit of the mover, e.g. 1Gi (sets GOMEMLIMIT)")
	f.StringArrayVar(&o.nodeSelector, "node-selector", nil, "key=value the Job's node must carry (repeatable)")
	f.StringArrayVar(&o.jobArgs, "job-arg", nil, "extra argument for the mover in the Job, e.g. --connections=8 (repeatable)")
	f.DurationVar(&o.deadline, "deadline", 6*time.Hour, "the Job's activeDeadlineSeconds")
	f.DurationVar(&o.timeout, "timeout", 0, "how long to wait for the Job (default: deadline + 10m)")
	f.DurationVar(&o.snapTimeout, "snapshot-timeout", 10*time.Minute, "how long to wait for a VolumeSnapshot to be ready")
	f.Int32Var(&o.backoff, "backoff-limit", 2, "failed pods the Job retries")
	f.BoolVar(&o.keep, "keep-on-failure", false, "leave the objects of a failed operation for inspection (delete them with mover k8s cleanup)")
	f.BoolVar(&o.allowModeChange, "allow-volume-mode-change", false, "annotate VolumeSnapshotContents so a Filesystem-mode volume can be handled at block level (needs RBAC: patch volumesnapshotcontents)")
	f.Int32Var(&o.metricsPort, "metrics-port", 0, "serve Prometheus metrics from the Job's pod on this port")
	cmd.MarkFlagRequired("secret")
}

// clients connects to the cluster and settles the namespace.
func (o *k8sOptions) clients() (*csi.Clients, string, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = o.kubeconfig
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: o.context})
	cfg, err := cc.ClientConfig()
	if err != nil {
		return nil, "", fmt.Errorf("kubernetes config: %w", err)
	}
	ns := o.namespace
	if ns == "" {
		if ns, _, err = cc.Namespace(); err != nil {
			return nil, "", fmt.Errorf("kubernetes namespace: %w", err)
		}
	}
	c, err := csi.NewClients(cfg)
	return c, ns, err
}

func (o *k8sOptions) job(g *globalOptions) (csi.JobOptions, error) {
	j := csi.JobOptions{Image: o.image, ImagePullPolicy: corev1.PullPolicy(o.pullPolicy), Secret: o.secret,
		Repository: g.repo, ServiceAccount: o.serviceAccount, Args: o.jobArgs, ActiveDeadline: o.deadline,
		BackoffLimit: &o.backoff, MetricsPort: o.metricsPort}
	res := corev1.ResourceList{}
	if o.cpu != "" {
		q, err := resource.ParseQuantity(o.cpu)
		if err != nil {
			return j, usagef("--cpu %q: want e.g. 500m or 2 (a Kubernetes quantity)", o.cpu)
		}
		res[corev1.ResourceCPU] = q
	}
	if o.memory != "" {
		// The program's size grammar, which reads every Kubernetes
		// byte quantity the same way and also takes 1GiB.
		n, err := units.ParseSize(o.memory)
		if err != nil || n <= 0 {
			return j, usagef("--memory: %v", cmp.Or(err, errors.New("must be positive")))
		}
		res[corev1.ResourceMemory] = *resource.NewQuantity(n, resource.BinarySI)
	}
	if len(res) > 0 {
		j.Resources = corev1.ResourceRequirements{Requests: res, Limits: res}
	}
	for _, kv := range o.nodeSelector {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return j, usagef("--node-selector %q: want key=value", kv)
		}
		if j.NodeSelector == nil {
			j.NodeSelector = map[string]string{}
		}
		j.NodeSelector[k] = v
	}
	return j, nil
}

func (o *k8sOptions) timing() csi.Timing {
	return csi.Timing{Snapshot: o.snapTimeout, Job: o.timeout}
}

// defaultOperation derives an operation ID from a kind and an object name:
// the same PVC gets the same ID, so a rerun resumes.
func defaultOperation(kind, name string) string {
	s := strings.ToLower(strings.ReplaceAll(kind+"-"+name, ".", "-"))
	if len(s) <= csi.MaxOperationLen {
		return s
	}
	h := sha256.Sum256([]byte(s))
	return strings.TrimRight(s[:csi.MaxOperationLen-9], "-") + "-" + hex.EncodeToString(h[:4])
}

func (g *globalOptions) k8sLogger() *slog.Logger {
	if g.quiet {
		return nil
	}
	return slog.New(slog.NewTextHandler(g.env.stderr, nil))
}

func newK8sCommand(ctx context.Context, g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "k8s",
		Short: "Export or import a Kubernetes PVC through a mover Job",
		Long: `Run an export or import in a Kubernetes cluster: snapshot the PVC, clone the
snapshot as a Block-mode PVC, run the mover in a Job on it, report the Job's
result and clean up. The Job reads the repository password (and S3
credentials) from --secret; --repo sets MOVER_REPOSITORY for the Job, or the
Secret's MOVER_REPOSITORY key is used. See docs/kubernetes.md.`,
	}
	cmd.AddCommand(newK8sExportCommand(ctx, g), newK8sImportCommand(ctx, g), newK8sCleanupCommand(ctx, g), newK8sChangesCommand(ctx, g))
	return cmd
}

func newK8sExportCommand(ctx context.Context, g *globalOptions) *cobra.Command {
	var o k8sOptions
	var pvc, snapClass, volumeSnapshot, storageClass, name, base string
	var tags []string
	var baseHandle string
	var keepSnapshot bool
	cmd := &cobra.Command{
		Use:   "export --namespace NS --pvc NAME --secret SECRET",
		Short: "Export a PVC: VolumeSnapshot, block-mode clone, mover Job",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			t, err := parseTags(tags)
			if err != nil {
				return err
			}
			job, err := o.job(g)
			if err != nil {
				return err
			}
			c, ns, err := o.clients()
			if err != nil {
				return err
			}
			op := o.operation
			if op == "" {
				op = defaultOperation("export", pvc)
			}
			ea := csi.ExportArgs{Namespace: ns, PVC: pvc, Operation: op, VolumeSnapshot: volumeSnapshot,
				SnapshotClass: snapClass, StorageClass: storageClass, AllowVolumeModeChange: o.allowModeChange,
				Volume: name, Tags: t, Base: base, Job: job, Timing: o.timing(), KeepOnFailure: o.keep, Log: g.k8sLogger()}
			ea.KeepSnapshot = keepSnapshot
			if baseHandle != "" {
				ea.ChangedBlocks = &csi.ChangedBlocks{BaseSnapshotHandle: baseHandle}
			}
			res, err := c.Export(ctx, ea)
			if err != nil {
				return k8sError(err)
			}
			if g.json {
				return g.printJSON(res.Raw)
			}
			fmt.Fprintf(g.env.stdout, "snapshot %s of %s/%s: %s in %.1fs; new %s, stored %s\n", res.Snapshot, ns, pvc,
				units.Bytes(res.Size), res.Seconds, units.Bytes(res.NewBytes), units.Bytes(res.StoredBytes))
			return nil
		},
	}
	o.register(cmd)
	g.registerRepo(cmd)
	f := cmd.Flags()
	f.StringVar(&pvc, "pvc", "", "the PVC to export (required)")
	f.StringVar(&snapClass, "snapshot-class", "", "VolumeSnapshotClass (default: the driver's default class)")
	f.StringVar(&volumeSnapshot, "volume-snapshot", "", "export this existing VolumeSnapshot of the PVC instead of taking one")
	f.StringVar(&storageClass, "storage-class", "", "storage class of the block-mode clone (default: the PVC's)")
	volumeFlag(cmd, &name, "volume name in the repository (default NAMESPACE-PVC; alias --name)")
	f.StringArrayVar(&tags, "tag", nil, "tag the snapshot with key=value (repeatable)")
	f.StringVar(&base, "base", "", "incremental: reuse the chunks of this repository snapshot")
	f.BoolVar(&keepSnapshot, "keep-snapshot", false, "keep the VolumeSnapshot after the export, as the base of the next --base-snapshot-handle (delete it with mover k8s cleanup)")
	f.StringVar(&baseHandle, "base-snapshot-handle", "", "with --base: the CSI snapshot handle of the base export's VolumeSnapshot; the Job then reads only the blocks the driver's SnapshotMetadata service reports changed")
	cmd.MarkFlagRequired("pvc")
	return cmd
}

func newK8sImportCommand(ctx context.Context, g *globalOptions) *cobra.Command {
	var o k8sOptions
	var pvc, snapshot, size, storageClass, mode, snapClass string
	var bo backendOptions
	cmd := &cobra.Command{
		Use:   "import --namespace NS --pvc NEW --snapshot ID --secret SECRET",
		Short: "Import a snapshot onto a new PVC through a mover Job",
		Long: `Create a PVC and write a repository snapshot onto it in a mover Job. The PVC is
Block-mode unless --volume-mode Filesystem, which imports onto a Block-mode
staging PVC, snapshots it and restores that as a Filesystem-mode PVC.
--size is the snapshot's size; without it the repository is opened here
(--repo, MOVER_PASSWORD) to look it up.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			job, err := o.job(g)
			if err != nil {
				return err
			}
			var n int64
			if size != "" {
				if n, err = units.ParseSize(size); err != nil {
					return usagef("--size: %v", err)
				}
			} else if n, err = g.snapshotSize(ctx, bo, snapshot); err != nil {
				return fmt.Errorf("--size not given and %w", err)
			}
			c, ns, err := o.clients()
			if err != nil {
				return err
			}
			op := o.operation
			if op == "" {
				op = defaultOperation("import", pvc)
			}
			res, err := c.Import(ctx, csi.ImportArgs{Namespace: ns, PVC: pvc, Operation: op, Snapshot: snapshot, Size: n,
				StorageClass: storageClass, VolumeMode: corev1.PersistentVolumeMode(mode), SnapshotClass: snapClass,
				AllowVolumeModeChange: o.allowModeChange, Job: job, Timing: o.timing(), KeepOnFailure: o.keep, Log: g.k8sLogger()})
			if err != nil {
				return k8sError(err)
			}
			if g.json {
				return g.printJSON(res.Raw)
			}
			fmt.Fprintf(g.env.stdout, "imported snapshot %s onto PVC %s/%s: %s in %.1fs\n", res.Snapshot, ns, res.PVC, units.Bytes(res.Size), res.Seconds)
			if res.Pending {
				fmt.Fprintf(g.env.stdout, "the PVC binds on first use; run `mover k8s cleanup -n %s --operation %s` after that\n", ns, op)
			}
			return nil
		},
	}
	o.register(cmd)
	bo.register(cmd) // for looking up --size in an S3 repository
	g.registerRepo(cmd)
	f := cmd.Flags()
	f.StringVar(&pvc, "pvc", "", "name of the PVC to create (required)")
	f.StringVar(&snapshot, "snapshot", "", "repository snapshot: ID, prefix, latest or latest:VOLUME (required)")
	f.StringVar(&size, "size", "", "the snapshot's size, e.g. 10GiB (default: looked up in the repository)")
	f.StringVar(&storageClass, "storage-class", "", "storage class of the new PVC (default: the cluster's default)")
	f.StringVar(&mode, "volume-mode", "Block", "Block or Filesystem")
	f.StringVar(&snapClass, "snapshot-class", "", "with --volume-mode Filesystem: VolumeSnapshotClass of the staging snapshot")
	cmd.MarkFlagRequired("pvc")
	cmd.MarkFlagRequired("snapshot")
	return cmd
}

func newK8sCleanupCommand(ctx context.Context, g *globalOptions) *cobra.Command {
	var o k8sOptions
	var op string
	cmd := &cobra.Command{
		Use:   "cleanup --operation ID",
		Short: "Delete the Job, clone and VolumeSnapshot of an operation",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ns, err := o.clients()
			if err != nil {
				return err
			}
			return k8sError(c.Cleanup(ctx, ns, op))
		},
	}
	o.registerCluster(cmd)
	f := cmd.Flags()
	f.StringVar(&op, "operation", "", "operation ID (required)")
	cmd.MarkFlagRequired("operation")
	return cmd
}

// k8sError marks argument errors as usage errors.
func k8sError(err error) error {
	if errors.Is(err, csi.ErrInvalidArgs) {
		return usageError{err}
	}
	return err
}

// snapshotSize opens the repository here to find a snapshot's size.
func (g *globalOptions) snapshotSize(ctx context.Context, bo backendOptions, id string) (int64, error) {
	r, err := g.openRepo(ctx, bo, repo.Options{NoIndex: true}) // a snapshot's size needs no index
	if err != nil {
		return 0, fmt.Errorf("the repository cannot be opened here: %w", err)
	}
	defer closeRepo(r)
	snap, err := g.findSnapshot(ctx, r, id)
	if err != nil {
		return 0, err
	}
	return snap.Size, nil
}

func newK8sChangesCommand(ctx context.Context, g *globalOptions) *cobra.Command {
	var o k8sOptions
	var snapshot, baseSnapshot, baseHandle, sa, size, out string
	cmd := &cobra.Command{
		Use:   "changes --snapshot VS --base-snapshot-handle H --service-account SA --size N --out FILE",
		Short: "Write the changed blocks of a VolumeSnapshot as a change list (the init container of an incremental Job)",
		Long: `Ask the CSI driver's SnapshotMetadata service (found through its
SnapshotMetadataService object, with a token of --service-account for the
service's audience) for the blocks of --snapshot that changed since the base
snapshot, and write them as a SnapshotMetadata change list for
mover export --changes. Without a base, the allocated blocks.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := units.ParseSize(size)
			if err != nil || n <= 0 {
				return usagef("--size %q: want the volume size", size)
			}
			c, ns, err := o.clients()
			if err != nil {
				return err
			}
			cl, err := c.CollectChanges(ctx, csi.CBTArgs{Namespace: ns, Snapshot: snapshot, BaseSnapshot: baseSnapshot,
				BaseSnapshotHandle: baseHandle, ServiceAccountNamespace: ns, ServiceAccount: sa}, n)
			if err != nil {
				return k8sError(err)
			}
			b, err := json.Marshal(cl.SnapshotMetadata(n))
			if err != nil {
				return fmt.Errorf("encoding the change list: %w", err)
			}
			if out == "" || out == "-" {
				_, err = g.env.stdout.Write(append(b, '\n'))
				return err
			}
			if err := os.WriteFile(out, b, 0o644); err != nil {
				return fmt.Errorf("writing the change list: %w", err)
			}
			if !g.quiet {
				fmt.Fprintf(g.env.stderr, "mover k8s changes: %s, %s of %s\n", units.Plural(len(cl), "extent"), units.Bytes(cl.Bytes()), units.Bytes(n))
			}
			return nil
		},
	}
	o.registerCluster(cmd)
	f := cmd.Flags()
	f.StringVar(&snapshot, "snapshot", "", "the VolumeSnapshot being exported (required)")
	f.StringVar(&baseSnapshot, "base-snapshot", "", "the base VolumeSnapshot")
	f.StringVar(&baseHandle, "base-snapshot-handle", "", "the base's CSI snapshot handle (instead of --base-snapshot)")
	f.StringVar(&sa, "service-account", "", "ServiceAccount to request the service's token for: this pod's (required)")
	f.StringVar(&size, "size", "", "volume size in bytes (required)")
	f.StringVar(&out, "out", "-", "file to write")
	cmd.MarkFlagRequired("snapshot")
	cmd.MarkFlagRequired("service-account")
	cmd.MarkFlagRequired("size")
	return cmd
}
