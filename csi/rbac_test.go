package csi

import (
	"testing"

	authzv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// can asks the API server (SubjectAccessReview) whether the ServiceAccount
// of the test namespace may do verb on resource.
func (e *env) can(sa, verb, group, resource, sub, ns, name string) bool {
	e.t.Helper()
	r, err := e.admin.Kube.AuthorizationV1().SubjectAccessReviews().Create(e.ctx, &authzv1.SubjectAccessReview{
		Spec: authzv1.SubjectAccessReviewSpec{
			User:   "system:serviceaccount:" + e.ns + ":" + sa,
			Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + e.ns, "system:authenticated"},
			ResourceAttributes: &authzv1.ResourceAttributes{Namespace: ns, Verb: verb, Group: group,
				Resource: resource, Subresource: sub, Name: name},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	return r.Status.Allowed
}

// TestRBAC: deploy/rbac.yaml grants the orchestrator and the mover pods what
// they need and nothing else. (The end-to-end tests run as the orchestrator
// and so prove the grants suffice; this checks the denials.)
func TestRBAC(t *testing.T) {
	e := newEnv(t)
	type check struct {
		sa, verb, group, resource, sub, name string
		namespaced                           bool
		allowed                              bool
	}
	const snap, cbt = "snapshot.storage.k8s.io", "cbt.storage.k8s.io"
	checks := []check{
		// The orchestrator.
		{orchestratorSA, "get", "", "persistentvolumeclaims", "", "", true, true},
		{orchestratorSA, "create", "", "persistentvolumeclaims", "", "", true, true},
		{orchestratorSA, "delete", "", "persistentvolumeclaims", "", "", true, true},
		{orchestratorSA, "patch", "", "persistentvolumeclaims", "", "", true, true}, // the import's record
		{orchestratorSA, "create", snap, "volumesnapshots", "", "", true, true},
		{orchestratorSA, "delete", snap, "volumesnapshots", "", "", true, true},
		{orchestratorSA, "create", "batch", "jobs", "", "", true, true},
		{orchestratorSA, "list", "", "pods", "", "", true, true},
		{orchestratorSA, "list", "", "events", "", "", true, true},
		{orchestratorSA, "get", "", "persistentvolumes", "", "", false, true},
		{orchestratorSA, "list", snap, "volumesnapshotclasses", "", "", false, true},
		{orchestratorSA, "get", snap, "volumesnapshotcontents", "", "", false, true},
		{orchestratorSA, "get", "storage.k8s.io", "storageclasses", "", "", false, true},
		// ... and not: no Secrets, no writes beyond its objects' kinds, no
		// exec, no other namespaces, no mode changes unless bound.
		{orchestratorSA, "get", "", "secrets", "", "", true, false},
		{orchestratorSA, "list", "", "secrets", "", "", true, false},
		{orchestratorSA, "update", "", "persistentvolumeclaims", "", "", true, false},
		{orchestratorSA, "update", "batch", "jobs", "", "", true, false},
		{orchestratorSA, "delete", "", "pods", "", "", true, false},
		{orchestratorSA, "create", "", "pods", "exec", "", true, false},
		{orchestratorSA, "delete", "", "persistentvolumes", "", "", false, false},
		{orchestratorSA, "patch", snap, "volumesnapshotcontents", "", "", false, false},
		{orchestratorSA, "delete", snap, "volumesnapshotcontents", "", "", false, false},
		{orchestratorSA, "create", "", "serviceaccounts", "token", moverSA, true, false},
		{orchestratorSA, "create", "rbac.authorization.k8s.io", "rolebindings", "", "", true, false},
		// The mover pods: CBT only.
		{moverSA, "get", cbt, "snapshotmetadataservices", "", testDriver, false, true},
		{moverSA, "get", snap, "volumesnapshots", "", "", true, true},
		{moverSA, "get", snap, "volumesnapshotcontents", "", "", false, true},
		{moverSA, "create", "", "serviceaccounts", "token", moverSA, true, true},
		{moverSA, "create", "", "serviceaccounts", "token", orchestratorSA, true, false},
		{moverSA, "list", cbt, "snapshotmetadataservices", "", "", false, false},
		{moverSA, "create", snap, "volumesnapshots", "", "", true, false},
		{moverSA, "get", "", "secrets", "", "", true, false},
		{moverSA, "get", "", "persistentvolumeclaims", "", "", true, false},
		{moverSA, "create", "batch", "jobs", "", "", true, false},
	}
	for _, c := range checks {
		ns := ""
		if c.namespaced {
			ns = e.ns
		}
		if got := e.can(c.sa, c.verb, c.group, c.resource, c.sub, ns, c.name); got != c.allowed {
			t.Errorf("%s %s %s.%s/%s %s: allowed %v, want %v", c.sa, c.verb, c.resource, c.group, c.sub, c.name, got, c.allowed)
		}
	}
	// Another namespace is out of reach.
	if e.can(orchestratorSA, "create", "batch", "jobs", "", "kube-system", "") {
		t.Error("orchestrator may create Jobs in kube-system")
	}
}
