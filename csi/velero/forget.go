package velero

import (
	"time"

	"github.com/blockmover/blockmover/repo"
)

// ForgetRule decides which snapshots of a repository belong to Velero
// backups that are gone. It judges only snapshots tagged LabelBackupName
// (the controller tags every snapshot it makes) and older than Before;
// every other snapshot is kept.
//
// A snapshot's Backup is identified by name, not UID: Velero's backup sync
// re-creates the Backups of a location in a new cluster under new UIDs,
// while the snapshot keeps the UID of the cluster that made it. A Backup
// deleted and created again under the same name therefore keeps the old
// backup's snapshots until the new one is deleted too (never the other way
// round).
type ForgetRule struct {
	// Live names the Backups that exist: their snapshots are kept.
	Live map[string]bool
	// Deleted names Backups that Velero's backup deletion removed (the
	// Backup was in phase Deleting when it went): their snapshots are
	// forgotten, whatever their age, unless the name is Live again.
	Deleted map[string]bool
	// Orphans, when set, also forgets the snapshots of any other Backup
	// not in Live, once older than Grace before Before. Set it only when
	// Live was listed across a sync of the location by Velero, which
	// re-creates every Backup the location holds: a Backup missing then
	// was deleted from the location too.
	Orphans bool
	// Before: snapshots written at or after it are kept (they may belong
	// to Backups created after Live was listed).
	Before time.Time
	// Grace is the minimum age (before Before) of an orphan snapshot.
	Grace time.Duration
}

// Forget reports whether s is to be forgotten, and why.
func (r *ForgetRule) Forget(s *repo.Snapshot) (bool, string) {
	name, ok := s.Tags[LabelBackupName]
	switch {
	case !ok || name == "":
		return false, "not a Velero backup's"
	case !s.Time.Before(r.Before):
		return false, "newer than the list of Backups"
	case r.Live[name]:
		return false, "Backup " + name + " exists"
	case r.Deleted[name]:
		return true, "Backup " + name + " was deleted"
	case r.Orphans && !s.Time.After(r.Before.Add(-r.Grace)):
		return true, "Backup " + name + " is gone from the cluster and its location"
	case r.Orphans:
		return false, "Backup " + name + " is gone, but the snapshot is younger than the grace"
	}
	return false, "Backup " + name + " is not known to be deleted"
}
