package changes_test

import (
	"context"
	"strings"
	"testing"

	"github.com/blockmover/blockmover/changes"
)

// TestNothingChangedIsNotNil: a change list that lists no extent means
// "nothing changed" and must stay distinct from "no change list" (nil),
// which makes an incremental export read the whole volume.
func TestNothingChangedIsNotNil(t *testing.T) {
	const size = 1 << 30
	docs := []struct{ name, doc, format string }{
		{"snapshot-metadata", `{"block_metadata_type":"FIXED_LENGTH","volume_capacity_bytes":1073741824,"block_metadata":[]}`, ""},
		{"snapshot-metadata without blocks", `{"block_metadata_type":"VARIABLE_LENGTH","volume_capacity_bytes":1073741824}`, ""},
		{"lister array", `[]`, changes.FormatSnapshotMetadata},
		{"rbd", `[]`, ""},
		{"ebs", `{"ChangedBlocks":[],"VolumeSize":1,"BlockSize":524288}`, ""},
	}
	for _, tc := range docs {
		t.Run(tc.name, func(t *testing.T) {
			cl, err := changes.ParseChanges(strings.NewReader(tc.doc), tc.format, size)
			if err != nil {
				t.Fatal(err)
			}
			if cl == nil || len(cl) != 0 {
				t.Fatalf("ParseChanges = %#v, want an empty ChangeList that is not nil", cl)
			}
		})
	}
	empty := changes.ChangeList{}
	got := map[string]changes.ChangeList{
		"Clip of nothing":     changes.ChangeList{{0, 10}}.Clip(100, 10),
		"Clip of a bad range": changes.ChangeList{{0, 10}}.Clip(0, -1),
		"Union of empties":    empty.Union(empty),
		"Union of nils":       changes.ChangeList(nil).Union(nil),
	}
	var err error
	if got["NewChangeList of none"], err = changes.NewChangeList(nil, size); err != nil {
		t.Fatal(err)
	}
	if got["CollectChanges of empty"], err = changes.CollectChanges(context.Background(), empty, size); err != nil {
		t.Fatal(err)
	}
	for name, cl := range got {
		if cl == nil || len(cl) != 0 {
			t.Errorf("%s = %#v, want an empty ChangeList that is not nil", name, cl)
		}
	}
}
