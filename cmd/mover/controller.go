package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/blockmover/blockmover/csi"
	"github.com/blockmover/blockmover/csi/velero"
	"github.com/spf13/cobra"
	"k8s.io/client-go/tools/clientcmd"
)

// controllerOptions are the flags of `mover controller`.
type controllerOptions struct {
	kubeconfig, context string
	cfg                 velero.Config
	progressEvery       time.Duration
}

func newControllerCommand(ctx context.Context, g *globalOptions) *cobra.Command {
	var o controllerOptions
	cmd := &cobra.Command{
		Use:   "controller",
		Short: "Serve Velero as its data mover (DataUpload and DataDownload)",
		Long: `Reconcile Velero's DataUploads and DataDownloads whose spec.datamover is
--name: export each backed-up PVC's snapshot into a blockmover repository under
the BackupStorageLocation (prefix plugins/blockmover/), and restore from it. Replicas
elect a leader through a Lease; see docs/velero.md and deploy/controller.yaml.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return runController(ctx, g, &o) },
	}
	f := cmd.Flags()
	f.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file (default: in-cluster, then $KUBECONFIG)")
	f.StringVar(&o.context, "context", "", "kubeconfig context")
	f.StringVar(&o.cfg.Name, "name", velero.DefaultName, "data mover name to serve (velero backup create --data-mover NAME)")
	f.StringVarP(&o.cfg.Namespace, "namespace", "n", "velero", "Velero's namespace")
	f.StringVar(&o.cfg.PasswordSecret, "password-secret", "blockmover-password", "Secret in Velero's namespace whose key MOVER_PASSWORD is the repository password")
	f.StringVar(&o.cfg.Image, "image", defaultImage, "mover image of the Jobs")
	f.StringVar(&o.cfg.ServiceAccount, "service-account", "", "ServiceAccount of the mover pods")
	f.IntVar(&o.cfg.Concurrency, "concurrency", 2, "operations in progress at once")
	f.StringVar(&o.cfg.Identity, "identity", os.Getenv("POD_NAME"), "this replica's name in the leader election (default $POD_NAME, else the host name)")
	f.StringVar(&o.cfg.LeaseName, "lease", "blockmover-controller", "leader election Lease in Velero's namespace")
	f.DurationVar(&o.progressEvery, "progress-every", 5*time.Second, "how often status.progress is refreshed")
	f.DurationVar(&o.cfg.GCEvery, "gc-every", 24*time.Hour, "how often each repository is collected (mover gc in a Job) and checked for snapshots of deleted backups")
	f.DurationVar(&o.cfg.OrphanGrace, "orphan-grace", 24*time.Hour, "minimum age of a snapshot whose Backup vanished without the controller seeing it deleted, before it is forgotten")
	f.StringSliceVar(&o.cfg.GCArgs, "gc-arg", nil, "extra argument of the gc Jobs (repeat), e.g. --gc-arg=--grace=2h")
	cmd.AddCommand(newForgetBackupsCommand(ctx, g))
	return cmd
}

func runController(ctx context.Context, g *globalOptions, o *controllerOptions) error {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = o.kubeconfig
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: o.context})
	rc, err := cc.ClientConfig()
	if err != nil {
		return fmt.Errorf("kubernetes config: %w", err)
	}
	clients, err := csi.NewClients(rc)
	if err != nil {
		return err
	}
	if o.cfg.Identity == "" {
		if o.cfg.Identity, err = os.Hostname(); err != nil {
			return fmt.Errorf("--identity: %w", err)
		}
	}
	o.cfg.ProgressEvery = o.progressEvery
	o.cfg.Log = slog.New(slog.NewJSONHandler(g.env.stderr, nil))
	c, err := velero.New(clients, o.cfg)
	if err != nil {
		return usageError{err}
	}
	return c.Run(ctx)
}
