package csi

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/blockmover/blockmover/changes"
	"github.com/blockmover/blockmover/internal/testutil"
	"github.com/kubernetes-csi/external-snapshot-metadata/pkg/api"
	snapv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// TestCBTInCluster: as the mover pod's ServiceAccount, find the driver's
// SnapshotMetadataService, get a token with its audience (TokenRequest),
// and read the allocated blocks of a snapshot from a real gRPC service over
// TLS verified with the advertised CA.
func TestCBTInCluster(t *testing.T) {
	e := newEnv(t)
	const audience = "blockmover-test-sms"
	srv := &metadataServer{devices: map[string]string{}}
	addr := e.serveSnapshotMetadata(srv, audience)
	e.boundPVC("data", "8Mi", corev1.PersistentVolumeBlock)
	pvc := "data"
	if _, err := e.admin.Snapshot.SnapshotV1().VolumeSnapshots(e.ns).Create(e.ctx, &snapv1.VolumeSnapshot{
		ObjectMeta: metav1.ObjectMeta{Name: "snap-1"},
		Spec:       snapv1.VolumeSnapshotSpec{Source: snapv1.VolumeSnapshotSource{PersistentVolumeClaimName: &pvc}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.admin.WaitSnapshotReady(e.ctx, e.ns, "snap-1", 20*time.Millisecond, 20*time.Second); err != nil {
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
	if conn.Service.Address != addr || conn.Service.Audience != audience || conn.BaseSnapshotID == "" {
		t.Errorf("connection %+v", conn)
	}
	// The token is the mover's, for the service's audience only.
	tr, err := e.admin.Kube.AuthenticationV1().TokenReviews().Create(e.ctx, &authnv1.TokenReview{
		Spec: authnv1.TokenReviewSpec{Token: conn.Token, Audiences: []string{audience}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !tr.Status.Authenticated || tr.Status.User.Username != "system:serviceaccount:"+e.ns+":"+moverSA {
		t.Errorf("token review %+v", tr.Status)
	}
	// The mover may not get a token for another ServiceAccount.
	if _, _, err := mover1.RequestToken(e.ctx, e.ns, orchestratorSA, audience, 0); err == nil {
		t.Error("the mover got a token of the orchestrator")
	}

	const size = 8 << 20
	dev := testutil.LoopDevice(t, size)
	writeAt(t, dev, 2<<20, bytes.Repeat([]byte{9}, 100_000))
	srv.token = conn.Token
	srv.devices["snap-1"] = dev
	client, closer, err := conn.Service.Dial()
	if err != nil {
		t.Fatal(err)
	}
	defer closer.Close()
	conn.BaseSnapshotID = "" // allocated blocks: the test server's delta wants another namespace
	src, err := conn.Source(client)
	if err != nil {
		t.Fatal(err)
	}
	alloc, err := changes.CollectChanges(e.ctx, src, size)
	if err != nil {
		t.Fatal(err)
	}
	if alloc.Bytes() != 102400 {
		t.Errorf("allocated %v (%d bytes)", alloc, alloc.Bytes())
	}
}

// serveSnapshotMetadata serves srv over TLS (a self-signed certificate)
// and advertises it, as the CSI driver's deployment of the
// external-snapshot-metadata sidecar does, in the test driver's
// SnapshotMetadataService object with audience. It returns the address.
func (e *env) serveSnapshotMetadata(srv api.SnapshotMetadataServer, audience string) string {
	t := e.t
	t.Helper()
	certPEM, tlsCert := selfSigned(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{tlsCert}})))
	api.RegisterSnapshotMetadataServer(g, srv)
	go g.Serve(l)
	t.Cleanup(g.Stop)
	gvr := SnapshotMetadataServiceGVRs()[1] // the version the test CRD serves
	sms := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": gvr.GroupVersion().String(), "kind": "SnapshotMetadataService",
		"metadata": map[string]any{"name": testDriver},
		"spec":     map[string]any{"address": l.Addr().String(), "audience": audience, "caCert": base64.StdEncoding.EncodeToString(certPEM)},
	}}
	if _, err := e.admin.Dynamic.Resource(gvr).Create(e.ctx, sms, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		e.admin.Dynamic.Resource(gvr).Delete(context.Background(), testDriver, metav1.DeleteOptions{})
	})
	return l.Addr().String()
}

func selfSigned(t *testing.T) ([]byte, tls.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "snapshot-metadata"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	kb, _ := x509.MarshalECPrivateKey(key)
	c, err := tls.X509KeyPair(certPEM, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}))
	if err != nil {
		t.Fatal(err)
	}
	return certPEM, c
}
