package velero

// Backup deletion and repository maintenance.
//
// Velero deletes a backup (velero backup delete, or its TTL through the
// gc controller) with a DeleteBackupRequest: its backup deletion
// controller sets the Backup's phase to Deleting, runs the delete item
// actions (Velero's DataUpload action acts only for its own movers),
// deletes the DataUploads labelled with the backup's name, the backup's
// files in the location, and then the Backup; on success it deletes every
// DeleteBackupRequest of that backup at once. Nothing of a deleted backup
// stays in the cluster for long, so the controller keeps no record of its
// own: the repository is the record (every snapshot is tagged with its
// Backup's name and UID), and two signals decide.
//
//   - Online: the Backup informer's delete event. A Backup that was in
//     phase Deleting when it went was deleted by Velero: its snapshots are
//     forgotten at once. (A Backup deleted in another phase, e.g. with
//     kubectl, is re-created from the location by Velero's backup sync;
//     its snapshots stay.)
//   - Catch-up: on start, after a deletion of any kind and every GCEvery,
//     a pass lists the Backups before and after a sync of the location by
//     Velero (status.lastSyncedTime moves past the first listing); a
//     Backup absent from both lists is gone from the location as well,
//     and its snapshots older than OrphanGrace are forgotten. Without a
//     sync within SyncWait (Velero down, or its backup sync disabled),
//     only the Backups seen deleted are forgotten.
//
// No finalizer is used: `velero uninstall` deletes Velero's namespace and
// only strips Velero's own finalizers, so a finalizer of ours on Backups
// or DataUploads would either hang the namespace (the controller gone
// first) or, worse, make a running controller forget the data of backups
// that still exist in the location; and a finalizer on a Backup would be
// uploaded with the backup's metadata and synced into other clusters.
//
// The forgetting runs in a Job (`mover controller forget-backups`) with
// the same Secret as the mover Jobs, and then `mover gc` frees the data in
// another Job, every GCEvery per repository. Both hold the repository's
// maintenance lease, and the Jobs have fixed names per repository: there
// is never more than one of each; a restarted controller waits for the
// Job of the earlier run and deletes it before it starts its own.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/blockmover/blockmover/csi"
	velerov1 "github.com/vmware-tanzu/velero/pkg/apis/velero/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/tools/cache"
)

func backupsGVR() schema.GroupVersionResource {
	return velerov1.SchemeGroupVersion.WithResource("backups")
}

// AnnotationLastGC on a repository's Job Secret is when its last gc Job
// ended (RFC 3339).
const AnnotationLastGC = "blockmover.io/last-gc"

// maintenance is what the maintenance loop has yet to do.
type maintenance struct {
	mu sync.Mutex
	// deleted: location → names of Backups seen going in phase Deleting
	// ("" location: a Backup without spec.storageLocation, any location).
	deleted map[string]map[string]bool
	// dirty: locations due a forget pass ("" means all).
	dirty map[string]bool
	kick  chan struct{}
}

func newMaintenance() *maintenance {
	return &maintenance{deleted: map[string]map[string]bool{}, dirty: map[string]bool{"": true}, kick: make(chan struct{}, 1)}
}

func (m *maintenance) poke() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// backupDeleted records a Backup's deletion (an informer delete event).
func (c *Controller) backupDeleted(obj any) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return
	}
	b, err := fromUnstructured[velerov1.Backup](u)
	if err != nil {
		c.cfg.Log.Warn("deleted Backup", "error", err)
		return
	}
	m, bsl := c.maint, b.Spec.StorageLocation
	m.mu.Lock()
	if b.Status.Phase == velerov1.BackupPhaseDeleting {
		if m.deleted[bsl] == nil {
			m.deleted[bsl] = map[string]bool{}
		}
		m.deleted[bsl][b.Name] = true
	}
	m.dirty[bsl] = true
	m.mu.Unlock()
	c.cfg.Log.Info("Backup deleted", "backup", b.Name, "uid", b.UID, "phase", b.Status.Phase, "location", bsl)
	m.poke()
}

// maintain runs forget passes and gc Jobs until ctx ends.
func (c *Controller) maintain(ctx context.Context) {
	t := time.NewTicker(c.cfg.Resync)
	defer t.Stop()
	for {
		c.maintainOnce(ctx)
		select {
		case <-ctx.Done():
			return
		case <-c.maint.kick:
		case <-t.C:
		}
	}
}

// maintainOnce does what is due for every location in use.
func (c *Controller) maintainOnce(ctx context.Context) {
	locs, err := c.locationsInUse(ctx)
	if err != nil {
		c.cfg.Log.Warn("maintenance: listing the locations in use", "error", err)
		return
	}
	m := c.maint
	for _, bsl := range locs {
		if ctx.Err() != nil {
			return
		}
		gcDue, err := c.gcDue(ctx, bsl)
		if err != nil {
			c.cfg.Log.Warn("maintenance", "location", bsl, "error", err)
			continue
		}
		m.mu.Lock()
		dirty := gcDue || m.dirty[bsl] || m.dirty[""]
		delete(m.dirty, bsl)
		deleted := map[string]bool{}
		for _, k := range []string{bsl, ""} {
			for n := range m.deleted[k] {
				deleted[n] = true
			}
		}
		m.mu.Unlock()
		if dirty {
			if err := c.forgetPass(ctx, bsl, deleted); err != nil {
				c.cfg.Log.Warn("forgetting the snapshots of deleted backups; trying again later", "location", bsl, "error", oneLine(err))
				m.mu.Lock()
				m.dirty[bsl] = true
				m.mu.Unlock()
				continue
			}
			m.mu.Lock()
			for n := range deleted {
				delete(m.deleted[bsl], n)
			}
			m.mu.Unlock()
		}
		if gcDue {
			if err := c.runGC(ctx, bsl); err != nil {
				c.cfg.Log.Warn("gc", "location", bsl, "error", oneLine(err))
			}
		}
	}
	// Every location in use has had its pass: "" (all) is done, and the
	// deletions without a location were offered to each of them.
	if len(locs) > 0 && ctx.Err() == nil {
		m.mu.Lock()
		if !anyDirty(m.dirty, locs) {
			delete(m.dirty, "")
			delete(m.deleted, "")
		}
		m.mu.Unlock()
	}
}

func anyDirty(dirty map[string]bool, locs []string) bool {
	for _, l := range locs {
		if dirty[l] {
			return true
		}
	}
	return false
}

// locationsInUse lists the BackupStorageLocations that have a repository
// Job Secret of the controller's: those that a backup went to.
func (c *Controller) locationsInUse(ctx context.Context) ([]string, error) {
	list, err := c.dyn.Resource(bslGVR()).Namespace(c.cfg.Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing BackupStorageLocations: %w", err)
	}
	var out []string
	for _, l := range list.Items {
		s, err := c.clients.Kube.CoreV1().Secrets(c.cfg.Namespace).Get(ctx, RepositorySecretName(l.GetName()), metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
		case err != nil:
			return nil, fmt.Errorf("the Job Secret of BackupStorageLocation %s: %w", l.GetName(), err)
		case s.Labels[csi.LabelManagedBy] == csi.ManagedBy:
			out = append(out, l.GetName())
		}
	}
	sort.Strings(out)
	return out, nil
}

// gcDue reports whether bsl's repository is due a gc: GCEvery after the
// last one (the annotation AnnotationLastGC of its Job Secret). A Secret
// without it starts the clock.
func (c *Controller) gcDue(ctx context.Context, bsl string) (bool, error) {
	secrets := c.clients.Kube.CoreV1().Secrets(c.cfg.Namespace)
	s, err := secrets.Get(ctx, RepositorySecretName(bsl), metav1.GetOptions{})
	if err != nil {
		return false, fmt.Errorf("the Job Secret of BackupStorageLocation %s: %w", bsl, err)
	}
	last, err := time.Parse(time.RFC3339, s.Annotations[AnnotationLastGC])
	if err != nil {
		return false, c.markGC(ctx, bsl)
	}
	return !time.Now().Before(last.Add(c.cfg.GCEvery)), nil
}

// markGC records now as bsl's last gc.
func (c *Controller) markGC(ctx context.Context, bsl string) error {
	secrets := c.clients.Kube.CoreV1().Secrets(c.cfg.Namespace)
	name := RepositorySecretName(bsl)
	s, err := secrets.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("the Job Secret of BackupStorageLocation %s: %w", bsl, err)
	}
	if s.Annotations == nil {
		s.Annotations = map[string]string{}
	}
	s.Annotations[AnnotationLastGC] = time.Now().UTC().Format(time.RFC3339)
	if _, err := secrets.Update(ctx, s, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("recording the gc time on Secret %s/%s: %w", c.cfg.Namespace, name, err)
	}
	return nil
}

// backupNames lists the names of the Backups in Velero's namespace.
func (c *Controller) backupNames(ctx context.Context) (map[string]bool, error) {
	list, err := c.dyn.Resource(backupsGVR()).Namespace(c.cfg.Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing Backups: %w", err)
	}
	names := make(map[string]bool, len(list.Items))
	for _, b := range list.Items {
		names[b.GetName()] = true
	}
	return names, nil
}

// waitSync waits until Velero has synced bsl after t (its
// status.lastSyncedTime later than t), for at most SyncWait; it reports
// whether it has.
func (c *Controller) waitSync(ctx context.Context, bsl string, t time.Time) (bool, error) {
	deadline := time.Now().Add(c.cfg.SyncWait)
	for {
		loc, err := getObject[velerov1.BackupStorageLocation](ctx, c.dyn, bslGVR(), c.cfg.Namespace, bsl)
		if err != nil {
			return false, fmt.Errorf("BackupStorageLocation %s: %w", bsl, err)
		}
		if s := loc.Status.LastSyncedTime; s != nil && s.After(t) {
			return true, nil
		}
		if time.Now().After(deadline) {
			return false, nil
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(pollEvery(c.cfg.Timing)):
		}
	}
}

// forgetPass forgets the snapshots of bsl's repository whose Backups are
// gone: those of deleted, and, when Velero synced the location between
// two listings of the Backups, those of every Backup absent from both.
func (c *Controller) forgetPass(ctx context.Context, bsl string, deleted map[string]bool) error {
	repo, job, err := c.repository(ctx, bsl)
	if err != nil {
		return err
	}
	// Second precision, rounded down: the Job's --before.
	before := time.Now().UTC().Truncate(time.Second)
	live, err := c.backupNames(ctx)
	if err != nil {
		return err
	}
	synced, err := c.waitSync(ctx, bsl, before)
	if err != nil {
		return err
	}
	again, err := c.backupNames(ctx)
	if err != nil {
		return err
	}
	for n := range again {
		live[n] = true
	}
	var gone []string
	for n := range deleted {
		if !live[n] {
			gone = append(gone, n)
		}
	}
	sort.Strings(gone)
	if !synced && len(gone) == 0 {
		c.cfg.Log.Info("forget pass: Velero did not sync the location; no Backup seen deleted", "location", bsl, "waited", c.cfg.SyncWait)
		return nil
	}
	args := []string{"controller", "forget-backups", "--before=" + before.Format(time.RFC3339),
		fmt.Sprintf("--grace=%s", c.cfg.OrphanGrace)}
	if synced {
		args = append(args, "--orphans")
	}
	for _, n := range sortedNames(live) {
		args = append(args, "--live="+n)
	}
	for _, n := range gone {
		args = append(args, "--deleted="+n)
	}
	res, err := c.runMaintJob(ctx, "forget-"+repoHash(repo.URL), job, args, true)
	var jf *csi.JobFailedError
	if errors.As(err, &jf) && jf.ExitCode == exitNoRepository {
		c.cfg.Log.Info("forget pass: no repository yet", "location", bsl, "repository", repo.URL)
		return nil
	}
	if err != nil {
		return err
	}
	var out struct {
		Removed int      `json:"removed"`
		Kept    int      `json:"kept"`
		Backups []string `json:"backups"`
	}
	if err := json.Unmarshal(res.Raw, &out); err != nil {
		return fmt.Errorf("the forget Job's result: %w", err)
	}
	c.cfg.Log.Info("forget pass", "location", bsl, "repository", repo.URL, "synced", synced, "deleted", gone,
		"removed", out.Removed, "kept", out.Kept, "backups", out.Backups)
	return nil
}

// runGC runs `mover gc` on bsl's repository in a Job and records when it
// ended (success or not: a failing gc is tried again GCEvery later, and
// says why in the log).
func (c *Controller) runGC(ctx context.Context, bsl string) error {
	repo, job, err := c.repository(ctx, bsl)
	if err != nil {
		return err
	}
	res, err := c.runMaintJob(ctx, "gc-"+repoHash(repo.URL), job, append([]string{"gc"}, c.cfg.GCArgs...), false)
	if merr := c.markGC(ctx, bsl); merr != nil && err == nil {
		err = merr
	}
	if err != nil {
		return err
	}
	c.cfg.Log.Info("gc done", "location", bsl, "repository", repo.URL, "result", string(res.Raw))
	return nil
}

func sortedNames(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for n := range m {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// repoHash names a repository's maintenance Jobs: one per repository,
// whichever locations point at it.
func repoHash(url string) string {
	sum := sha256.Sum256([]byte(url))
	return hex.EncodeToString(sum[:8])
}

// runMaintJob runs the mover with args in the Job of operation op (one per
// repository and command) and returns its result. A Job of op left by an
// earlier run (a restarted controller) is adopted: its result is the
// answer, or, when fresh, it is waited for and deleted and the command
// runs again with today's args. The Job is deleted once it has an
// outcome.
func (c *Controller) runMaintJob(ctx context.Context, op string, o csi.JobOptions, args []string, fresh bool) (*csi.Result, error) {
	o.ActiveDeadline = maintDeadline
	return c.clients.RunCommand(ctx, csi.CommandArgs{Namespace: c.cfg.Namespace, Operation: op, Command: args, Rerun: fresh,
		Job: o, Timing: c.cfg.Timing, Log: c.cfg.Log})
}

// maintDeadline bounds a maintenance Job's run.
const maintDeadline = 6 * time.Hour
