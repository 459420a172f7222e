package csi

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// TestArgsValidated: bad arguments fail up front with ErrInvalidArgs,
// before any API call (the clients here are nil).
func TestArgsValidated(t *testing.T) {
	job := JobOptions{Image: "img", Secret: "s"}
	ok := ExportArgs{Namespace: "ns", PVC: "p", Operation: "op-1", Job: job}
	for name, mod := range map[string]func(a *ExportArgs){
		"no namespace":     func(a *ExportArgs) { a.Namespace = "" },
		"no pvc":           func(a *ExportArgs) { a.PVC = "" },
		"no operation":     func(a *ExportArgs) { a.Operation = "" },
		"bad operation":    func(a *ExportArgs) { a.Operation = "Op_1" },
		"long operation":   func(a *ExportArgs) { a.Operation = strings.Repeat("a", 41) },
		"no image":         func(a *ExportArgs) { a.Job.Image = "" },
		"no secret":        func(a *ExportArgs) { a.Job.Secret = "" },
		"root RunAsUser":   func(a *ExportArgs) { a.Job.RunAsUser = ptr(int64(0)) },
		"reserved label":   func(a *ExportArgs) { a.Job.Labels = map[string]string{LabelOperation: "x"} },
		"negative timing":  func(a *ExportArgs) { a.Job.ActiveDeadline = -time.Second },
		"cbt without base": func(a *ExportArgs) { a.ChangedBlocks = &ChangedBlocks{BaseSnapshotHandle: "h"} },
		"cbt without sa": func(a *ExportArgs) {
			a.Base = "latest"
			a.ChangedBlocks = &ChangedBlocks{BaseSnapshotHandle: "h"}
		},
	} {
		a := ok
		a.Job = job
		mod(&a)
		if err := a.Validate(); !errors.Is(err, ErrInvalidArgs) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if err := ok.Validate(); err != nil {
		t.Errorf("valid args: %v", err)
	}
	imp := ImportArgs{Namespace: "ns", PVC: "p", Operation: "op", Snapshot: "latest", Size: 1, Job: job}
	if err := imp.Validate(); err != nil {
		t.Errorf("valid import args: %v", err)
	}
	for name, mod := range map[string]func(a *ImportArgs){
		"no size":        func(a *ImportArgs) { a.Size = 0 },
		"no snapshot":    func(a *ImportArgs) { a.Snapshot = "" },
		"bad mode":       func(a *ImportArgs) { a.VolumeMode = "Raw" },
		"staging name":   func(a *ImportArgs) { a.PVC = ObjectName(a.Operation) },
		"missing secret": func(a *ImportArgs) { a.Job.Secret = "" },
	} {
		a := imp
		mod(&a)
		if err := a.Validate(); !errors.Is(err, ErrInvalidArgs) {
			t.Errorf("import %s: %v", name, err)
		}
	}
	if _, err := (&Clients{}).Export(context.Background(), ok); !errors.Is(err, ErrInvalidArgs) {
		t.Errorf("Export without clients: %v", err)
	}
	if err := (&CBTArgs{Namespace: "n", Snapshot: "s"}).Validate(); !errors.Is(err, ErrInvalidArgs) {
		t.Errorf("CBT without ServiceAccount: %v", err)
	}
}
