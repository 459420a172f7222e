package csi

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// TestWithNodeAffinity: the Job's pod must land where node-local storage
// keeps the source volume (issue 13, point 4), on top of the caller's own
// affinity.
func TestWithNodeAffinity(t *testing.T) {
	term := func(k, v string) corev1.NodeSelectorTerm {
		return corev1.NodeSelectorTerm{MatchExpressions: []corev1.NodeSelectorRequirement{{Key: k, Operator: corev1.NodeSelectorOpIn, Values: []string{v}}}}
	}
	vol := &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{term("topology.hostpath/node", "n1")}}

	if got := withNodeAffinity(nil, nil); got != nil {
		t.Errorf("no volume affinity: %+v", got)
	}
	got := withNodeAffinity(nil, vol)
	req := got.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution
	if len(req.NodeSelectorTerms) != 1 || req.NodeSelectorTerms[0].MatchExpressions[0].Values[0] != "n1" {
		t.Errorf("volume affinity alone: %+v", req)
	}
	caller := &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{
		NodeSelectorTerms: []corev1.NodeSelectorTerm{term("zone", "a"), term("zone", "b")}}}}
	got = withNodeAffinity(caller, vol)
	terms := got.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms
	if len(terms) != 2 {
		t.Fatalf("want each caller term ANDed with the volume's, got %+v", terms)
	}
	for _, tm := range terms {
		if len(tm.MatchExpressions) != 2 || tm.MatchExpressions[1].Key != "topology.hostpath/node" {
			t.Errorf("term %+v lacks the volume's node", tm)
		}
	}
	if n := len(caller.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms[0].MatchExpressions); n != 1 {
		t.Errorf("the caller's affinity was modified: %d expressions", n)
	}
}
