package csi

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/blockmover/blockmover/changes"
	"github.com/blockmover/blockmover/csi/internal/testcluster"
	snapv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestCBTInCluster: as the mover pod's ServiceAccount, find the driver's
// SnapshotMetadataService, get a token with its audience (TokenRequest),
// and read the allocated blocks of a snapshot, and its delta against
// itself, from the real csi-snapshot-metadata sidecar over TLS verified
// with the advertised CA. (The advertised address is in the pod network;
// the test dials the sidecar's own address on the host.)
func TestCBTInCluster(t *testing.T) {
	t.Parallel() // after the tests that set faults of the shared driver or kill the control plane
	e := newEnv(t)
	const size = 8 << 20
	e.boundPVC("data", "8Mi", corev1.PersistentVolumeBlock)
	e.fill("data", 2<<20, bytes.Repeat([]byte{9}, 100_000))
	pvc := "data"
	if _, err := e.admin.Snapshot.SnapshotV1().VolumeSnapshots(e.ns).Create(e.ctx, &snapv1.VolumeSnapshot{
		ObjectMeta: metav1.ObjectMeta{Name: "snap-1"},
		Spec:       snapv1.VolumeSnapshotSpec{Source: snapv1.VolumeSnapshotSource{PersistentVolumeClaimName: &pvc}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.admin.WaitSnapshotReady(e.ctx, e.ns, "snap-1", 100*time.Millisecond, time.Minute); err != nil {
		t.Fatal(err)
	}

	mover1, err := NewClients(e.saConfig(moverSA))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := mover1.ConnectCBT(e.ctx, CBTArgs{Namespace: e.ns, Snapshot: "snap-1", BaseSnapshot: "snap-1",
		ServiceAccountNamespace: e.ns, ServiceAccount: moverSA})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(conn.Service.Address, testcluster.PodGateway+":") || conn.Service.Audience != testcluster.SnapshotMetadataAudience ||
		!strings.HasPrefix(conn.BaseSnapshotID, "snap-") {
		t.Errorf("connection %+v", conn)
	}
	// The token is the mover's, for the service's audience only.
	tr, err := e.admin.Kube.AuthenticationV1().TokenReviews().Create(e.ctx, &authnv1.TokenReview{
		Spec: authnv1.TokenReviewSpec{Token: conn.Token, Audiences: []string{conn.Service.Audience}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !tr.Status.Authenticated || tr.Status.User.Username != "system:serviceaccount:"+e.ns+":"+moverSA {
		t.Errorf("token review %+v", tr.Status)
	}
	// The mover may not get a token for another ServiceAccount.
	if _, _, err := mover1.RequestToken(e.ctx, e.ns, orchestratorSA, conn.Service.Audience, 0); err == nil {
		t.Error("the mover got a token of the orchestrator")
	}

	conn.Service.Address = cluster.SnapshotMetadataAddr()
	client, closer, err := conn.Service.Dial()
	if err != nil {
		t.Fatal(err)
	}
	defer closer.Close()
	// Against itself: nothing changed.
	src, err := conn.Source(client)
	if err != nil {
		t.Fatal(err)
	}
	delta, err := changes.CollectChanges(e.ctx, src, size)
	if err != nil {
		t.Fatal(err)
	}
	if delta.Bytes() != 0 {
		t.Errorf("delta of a snapshot against itself: %v", delta)
	}
	// Allocated: the driver's 64 KiB blocks (FIXED_LENGTH) that hold the
	// 100,000 bytes written, from SEEK_DATA on its snapshot's file.
	conn.BaseSnapshotID = ""
	if src, err = conn.Source(client); err != nil {
		t.Fatal(err)
	}
	alloc, err := changes.CollectChanges(e.ctx, src, size)
	if err != nil {
		t.Fatal(err)
	}
	if alloc.Bytes() != 128<<10 || len(alloc) != 1 || alloc[0].Offset != 2<<20 {
		t.Errorf("allocated %v (%d bytes), want 128 KiB at 2 MiB", alloc, alloc.Bytes())
	}
	if err := e.admin.Snapshot.SnapshotV1().VolumeSnapshots(e.ns).Delete(e.ctx, "snap-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e.settles(0, 1, 0)
}
