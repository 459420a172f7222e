package velero

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/blockmover/blockmover/csi"
	velerov2 "github.com/vmware-tanzu/velero/pkg/apis/velero/v2alpha1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// DefaultName is the data mover name the controller answers to
// (`velero backup create --data-mover blockmover`).
const DefaultName = "blockmover"

// Config is the controller's configuration.
type Config struct {
	// Name is the spec.datamover value this controller serves (default
	// DefaultName). DataUploads and DataDownloads of other movers are
	// never touched.
	Name string
	// Namespace is Velero's namespace (required): the DataUploads,
	// DataDownloads, BackupStorageLocations and credential Secrets are
	// there, and so are the controller's Jobs, clones and Lease.
	Namespace string
	// PasswordSecret names the Secret in Namespace whose key
	// MOVER_PASSWORD is the repository password (required).
	PasswordSecret string
	// Image of the mover Jobs (required).
	Image string
	// ServiceAccount of the mover pods (default: the namespace's default).
	ServiceAccount string
	// Concurrency bounds the operations in progress at once (default 2).
	Concurrency int
	// Identity names this replica in the leader election Lease (required
	// with Run; the pod name is a good one).
	Identity string
	// LeaseName is the leader election Lease (default
	// "blockmover-controller").
	LeaseName string
	// MetricsPort of the mover pods, read for progress (default 8085).
	MetricsPort int32
	// ProgressEvery is how often a running operation's status.progress is
	// refreshed (default 5s; at most 10s is what Velero users expect).
	ProgressEvery time.Duration
	// Resync is how often every DataUpload and DataDownload is looked at
	// even without a change (default 10s).
	Resync time.Duration
	// GCEvery is how often each repository in use is collected (a `mover
	// gc` Job) after a pass that forgets the snapshots of Backups gone
	// unseen (default 24h).
	GCEvery time.Duration
	// GCArgs are added to the gc Jobs' command line (e.g. "--grace=2h").
	GCArgs []string
	// OrphanGrace is the minimum age of a snapshot whose Backup vanished
	// without the controller seeing Velero delete it, before it is
	// forgotten (default 24h): longer than any backup takes, so that a
	// backup another cluster is still writing to a shared location is
	// never taken for deleted.
	OrphanGrace time.Duration
	// SyncWait bounds how long a forget pass waits for Velero to sync the
	// BackupStorageLocation (its status.lastSyncedTime), default 10m;
	// without a sync only Backups seen deleted are forgotten.
	SyncWait time.Duration
	// Timing of the csi waits.
	Timing csi.Timing
	// Log receives the controller's records (default: none).
	Log *slog.Logger
}

func (c *Config) withDefaults() error {
	switch {
	case c.Namespace == "":
		return fmt.Errorf("%w: missing Namespace (Velero's)", csi.ErrInvalidArgs)
	case c.PasswordSecret == "":
		return fmt.Errorf("%w: missing PasswordSecret", csi.ErrInvalidArgs)
	case c.Image == "":
		return fmt.Errorf("%w: missing Image", csi.ErrInvalidArgs)
	}
	if c.Name == "" {
		c.Name = DefaultName
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 2
	}
	if c.LeaseName == "" {
		c.LeaseName = "blockmover-controller"
	}
	if c.MetricsPort == 0 {
		c.MetricsPort = 8085
	}
	if c.ProgressEvery <= 0 {
		c.ProgressEvery = 5 * time.Second
	}
	if c.Resync <= 0 {
		c.Resync = 10 * time.Second
	}
	if c.GCEvery <= 0 {
		c.GCEvery = 24 * time.Hour
	}
	if c.OrphanGrace <= 0 {
		c.OrphanGrace = 24 * time.Hour
	}
	if c.SyncWait <= 0 {
		c.SyncWait = 10 * time.Minute
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Controller reconciles DataUploads and DataDownloads. Build it with New;
// Run it once.
type Controller struct {
	cfg     Config
	clients *csi.Clients
	dyn     dynamic.Interface
	slots   chan struct{}
	kick    chan struct{}

	maint *maintenance
	// basesCollected is when the last pass collected the base snapshots
	// (only the Reconcile loop reads and writes it).
	basesCollected time.Time

	mu      sync.Mutex
	running map[types.UID]*operation // operations of this process
	wg      sync.WaitGroup
}

// operation is one DataUpload or DataDownload in progress here.
type operation struct {
	cancel context.CancelFunc
	// canceling: the operation is itself the cancel; a spec.cancel does
	// not stop it.
	canceling bool
}

// New checks cfg and returns a controller using clients (Dynamic is
// required: Velero's resources are read through it).
func New(clients *csi.Clients, cfg Config) (*Controller, error) {
	if clients == nil || clients.Kube == nil || clients.Snapshot == nil || clients.Dynamic == nil {
		return nil, fmt.Errorf("%w: Clients with Kube, Snapshot and Dynamic", csi.ErrInvalidArgs)
	}
	if err := cfg.withDefaults(); err != nil {
		return nil, err
	}
	return &Controller{cfg: cfg, clients: clients, dyn: clients.Dynamic,
		slots: make(chan struct{}, cfg.Concurrency), kick: make(chan struct{}, 1),
		running: map[types.UID]*operation{}, maint: newMaintenance()}, nil
}

// Run takes part in leader election on the Lease Config.LeaseName and
// reconciles while it leads, until ctx ends. A replica that loses the
// lease stops its operations (their Jobs stay for the next leader to
// adopt) and returns an error, so that its process restarts cleanly.
func (c *Controller) Run(ctx context.Context) error {
	if c.cfg.Identity == "" {
		return fmt.Errorf("%w: missing Identity for leader election", csi.ErrInvalidArgs)
	}
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1ObjectMeta(c.cfg.Namespace, c.cfg.LeaseName),
		Client:     c.clients.Kube.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: c.cfg.Identity},
	}
	// client-go calls OnStartedLeading in a goroutine of its own and does
	// not wait for it: run records whether Reconcile started, and Run
	// waits for it to end before returning.
	var (
		mu       sync.Mutex
		started  bool
		finished bool
		lost     bool
	)
	done := make(chan error, 1)
	// A Reconcile that fails (not for ctx) ends the leadership too.
	runCtx, cancelRun := context.WithCancel(ctx)
	defer cancelRun()
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:            lock,
		ReleaseOnCancel: true,
		LeaseDuration:   15 * time.Second,
		RenewDeadline:   10 * time.Second,
		RetryPeriod:     2 * time.Second,
		Name:            c.cfg.LeaseName,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(lctx context.Context) {
				mu.Lock()
				if finished {
					mu.Unlock()
					return
				}
				started = true
				mu.Unlock()
				c.cfg.Log.Info("leading", "identity", c.cfg.Identity)
				done <- c.Reconcile(lctx)
				cancelRun()
			},
			OnStoppedLeading: func() {
				mu.Lock()
				lost = ctx.Err() == nil
				mu.Unlock()
			},
		},
	})
	if err != nil {
		return fmt.Errorf("leader election: %w", err)
	}
	le.Run(runCtx)
	mu.Lock()
	finished = true
	wasStarted, wasLost := started, lost
	mu.Unlock()
	var runErr error
	if wasStarted {
		runErr = <-done
	}
	switch {
	case runErr != nil && !errors.Is(runErr, context.Canceled):
		return runErr
	case wasLost:
		return errors.New("lost the leader election lease; restarting so that the new leader adopts the operations")
	}
	return nil
}

// Reconcile reconciles without leader election until ctx ends, then waits
// for the operations it started to stop (their Jobs stay, to be adopted).
// Run calls it while leading; only one caller per cluster may run it.
func (c *Controller) Reconcile(ctx context.Context) error {
	f := dynamicinformer.NewFilteredDynamicSharedInformerFactory(c.dyn, c.cfg.Resync, c.cfg.Namespace, nil)
	uploads := f.ForResource(uploadsGVR()).Informer()
	downloads := f.ForResource(downloadsGVR()).Informer()
	h := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { c.Kick() },
		UpdateFunc: func(any, any) { c.Kick() },
		// A DataUpload or DataDownload deleted mid-operation (Velero
		// deletes a deleted backup's DataUploads) is canceled: its Job,
		// clone and snapshot go.
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if u, ok := obj.(*unstructured.Unstructured); ok {
				c.cancelRunning(u.GetUID())
			}
		},
	}
	for _, inf := range []cache.SharedIndexInformer{uploads, downloads} {
		if _, err := inf.AddEventHandler(h); err != nil {
			return fmt.Errorf("informer: %w", err)
		}
	}
	// Deleted Backups: their snapshots are forgotten (maintenance.go).
	backups := f.ForResource(backupsGVR()).Informer()
	if _, err := backups.AddEventHandler(cache.ResourceEventHandlerFuncs{DeleteFunc: c.backupDeleted}); err != nil {
		return fmt.Errorf("informer: %w", err)
	}
	f.Start(ctx.Done())
	defer func() {
		f.Shutdown()
		c.wg.Wait()
	}()
	if !cache.WaitForCacheSync(ctx.Done(), uploads.HasSynced, downloads.HasSynced, backups.HasSynced) {
		return fmt.Errorf("syncing the DataUpload, DataDownload and Backup caches: %w", context.Cause(ctx))
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.maintain(ctx)
	}()
	t := time.NewTicker(c.cfg.Resync)
	defer t.Stop()
	for {
		c.pass(ctx, uploads.GetStore().List(), downloads.GetStore().List())
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-c.kick:
		case <-t.C:
		}
	}
}

// Kick asks for a reconcile pass soon.
func (c *Controller) Kick() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// pass looks at every object once, oldest first so that slots go in
// creation order.
func (c *Controller) pass(ctx context.Context, uploads, downloads []any) {
	var all []*velerov2.DataUpload
	for _, o := range sortByCreation(uploads) {
		du, err := fromUnstructured[velerov2.DataUpload](o)
		if err != nil {
			c.cfg.Log.Warn("skipping DataUpload", "error", err)
			continue
		}
		all = append(all, du)
		c.reconcileUpload(ctx, du)
	}
	// The kept base snapshots, at most once per Resync (bases.go).
	if time.Since(c.basesCollected) >= c.cfg.Resync && len(all) == len(uploads) {
		c.basesCollected = time.Now()
		c.collectBases(ctx, all)
	}
	for _, o := range sortByCreation(downloads) {
		dd, err := fromUnstructured[velerov2.DataDownload](o)
		if err != nil {
			c.cfg.Log.Warn("skipping DataDownload", "error", err)
			continue
		}
		c.reconcileDownload(ctx, dd)
	}
}

func sortByCreation(objs []any) []*unstructured.Unstructured {
	out := make([]*unstructured.Unstructured, 0, len(objs))
	for _, o := range objs {
		if u, ok := o.(*unstructured.Unstructured); ok {
			out = append(out, u)
		}
	}
	sortUnstructured(out)
	return out
}

// isRunning reports whether uid has an operation in this process.
func (c *Controller) isRunning(uid types.UID) (*operation, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	op, ok := c.running[uid]
	return op, ok
}

// cancelRunning cancels the operation of uid in this process, if any,
// unless it is itself a cancel.
func (c *Controller) cancelRunning(uid types.UID) {
	if op, ok := c.isRunning(uid); ok && !op.canceling {
		op.cancel()
	}
}

// start runs fn for uid in a goroutine holding a slot, unless uid runs
// already or (when needSlot) no slot is free; it reports whether fn
// started. fn's context ends with ctx or the operation's cancel (never
// called by a spec.cancel when canceling: fn is the cancel).
func (c *Controller) start(ctx context.Context, uid types.UID, needSlot, canceling bool, fn func(context.Context)) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.running[uid]; ok {
		return false
	}
	if needSlot {
		select {
		case c.slots <- struct{}{}:
		default:
			return false
		}
	}
	octx, cancel := context.WithCancel(ctx)
	c.running[uid] = &operation{cancel: cancel, canceling: canceling}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer func() {
			cancel()
			c.mu.Lock()
			delete(c.running, uid)
			c.mu.Unlock()
			if needSlot {
				<-c.slots
			}
			c.Kick()
		}()
		fn(octx)
	}()
	return true
}
