package velero

import (
	"testing"
	"time"

	"github.com/blockmover/blockmover/repo"
)

// TestForgetRule: which snapshots a forget pass forgets, by the state of
// their Backup, their age, and the pass's knowledge.
func TestForgetRule(t *testing.T) {
	before := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	snap := func(backup string, age time.Duration) *repo.Snapshot {
		s := &repo.Snapshot{Time: before.Add(-age), Tags: map[string]string{}}
		if backup != "" {
			s.Tags[LabelBackupName] = backup
		}
		return s
	}
	rule := func(orphans bool) *ForgetRule {
		return &ForgetRule{Live: map[string]bool{"live": true}, Deleted: map[string]bool{"gone": true, "live": true},
			Orphans: orphans, Before: before, Grace: time.Hour}
	}
	for _, tc := range []struct {
		name    string
		s       *repo.Snapshot
		orphans bool
		want    bool
	}{
		{"untagged", snap("", 48*time.Hour), true, false},
		{"live backup", snap("live", 48*time.Hour), true, false},
		{"deleted, young", snap("gone", time.Minute), false, true},
		{"deleted, then live again under its name", snap("live", time.Minute), false, false},
		{"newer than the listing", snap("gone", -time.Second), true, false},
		{"at the listing", snap("gone", 0), true, false},
		{"orphan, old, synced", snap("other", 2*time.Hour), true, true},
		{"orphan, exactly the grace", snap("other", time.Hour), true, true},
		{"orphan, young, synced", snap("other", 30*time.Minute), true, false},
		{"orphan, old, not synced", snap("other", 48*time.Hour), false, false},
	} {
		if got, why := rule(tc.orphans).Forget(tc.s); got != tc.want {
			t.Errorf("%s: forget %v (%s), want %v", tc.name, got, why, tc.want)
		}
	}
}
