package csi

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/blockmover/blockmover/changes"
	"github.com/kubernetes-csi/external-snapshot-metadata/pkg/api"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	authv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// SnapshotMetadataServiceGVRs returns the versions of the
// cbt.storage.k8s.io resource that advertises a driver's SnapshotMetadata
// service, newest first: FindSnapshotMetadataService tries them in turn.
func SnapshotMetadataServiceGVRs() []schema.GroupVersionResource {
	return []schema.GroupVersionResource{
		{Group: "cbt.storage.k8s.io", Version: "v1beta1", Resource: "snapshotmetadataservices"},
		{Group: "cbt.storage.k8s.io", Version: "v1alpha1", Resource: "snapshotmetadataservices"},
	}
}

// SnapshotMetadataService is a CSI driver's SnapshotMetadata gRPC endpoint
// as its SnapshotMetadataService object (named after the driver)
// advertises it.
type SnapshotMetadataService struct {
	Driver   string
	Address  string // host:port of the gRPC service
	Audience string // the audience its security tokens must carry
	CACert   []byte // PEM bundle that verifies the service
}

// FindSnapshotMetadataService returns the SnapshotMetadataService of driver.
func (c *Clients) FindSnapshotMetadataService(ctx context.Context, driver string) (*SnapshotMetadataService, error) {
	if c.Dynamic == nil {
		return nil, fmt.Errorf("%w: missing Clients.Dynamic", ErrInvalidArgs)
	}
	var u *unstructured.Unstructured
	var err error
	for _, gvr := range SnapshotMetadataServiceGVRs() {
		u, err = c.Dynamic.Resource(gvr).Get(ctx, driver, metav1.GetOptions{})
		if !apierrors.IsNotFound(err) {
			break // found, or an answer (a denial) that another version would not change
		}
	}
	if err != nil {
		return nil, fmt.Errorf("SnapshotMetadataService %s (does driver %s offer changed-block tracking?): %w", driver, driver, explain(err))
	}
	s := &SnapshotMetadataService{Driver: driver}
	s.Address, _, _ = unstructured.NestedString(u.Object, "spec", "address")
	s.Audience, _, _ = unstructured.NestedString(u.Object, "spec", "audience")
	ca, _, _ := unstructured.NestedString(u.Object, "spec", "caCert")
	if s.Address == "" || s.Audience == "" || ca == "" {
		return nil, fmt.Errorf("SnapshotMetadataService %s: spec.address, spec.audience and spec.caCert are required", driver)
	}
	if s.CACert, err = base64.StdEncoding.DecodeString(ca); err != nil {
		return nil, fmt.Errorf("SnapshotMetadataService %s: spec.caCert: %w", driver, err)
	}
	return s, nil
}

// SnapshotDriver returns the CSI driver and snapshot handle of a ready
// VolumeSnapshot (through its VolumeSnapshotContent).
func (c *Clients) SnapshotDriver(ctx context.Context, ns, name string) (driver, handle string, err error) {
	vs, err := c.Snapshot.SnapshotV1().VolumeSnapshots(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return "", "", fmt.Errorf("VolumeSnapshot %s/%s: %w", ns, name, explain(err))
	}
	if vs.Status == nil || vs.Status.BoundVolumeSnapshotContentName == nil {
		return "", "", fmt.Errorf("VolumeSnapshot %s/%s is not bound to a VolumeSnapshotContent", ns, name)
	}
	vsc, err := c.Snapshot.SnapshotV1().VolumeSnapshotContents().Get(ctx, *vs.Status.BoundVolumeSnapshotContentName, metav1.GetOptions{})
	if err != nil {
		return "", "", fmt.Errorf("VolumeSnapshotContent of %s/%s: %w", ns, name, explain(err))
	}
	if vsc.Status != nil && vsc.Status.SnapshotHandle != nil {
		handle = *vsc.Status.SnapshotHandle
	}
	return vsc.Spec.Driver, handle, nil
}

// RequestToken asks the API server for a token of the ServiceAccount
// ns/name with the audience (TokenRequest; needs "create" on
// serviceaccounts/token).
func (c *Clients) RequestToken(ctx context.Context, ns, name, audience string, ttl time.Duration) (string, time.Time, error) {
	if ttl <= 0 {
		ttl = time.Hour
	}
	secs := int64(ttl / time.Second)
	tr, err := c.Kube.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name, &authv1.TokenRequest{
		Spec: authv1.TokenRequestSpec{Audiences: []string{audience}, ExpirationSeconds: &secs},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", time.Time{}, fmt.Errorf("token for ServiceAccount %s/%s with audience %q: %w", ns, name, audience, explain(err))
	}
	return tr.Status.Token, tr.Status.ExpirationTimestamp.Time, nil
}

// CBTArgs say whose changed blocks to ask for, and as whom.
type CBTArgs struct {
	// Namespace and Snapshot name the VolumeSnapshot whose blocks are
	// wanted (required).
	Namespace, Snapshot string
	// BaseSnapshot names the VolumeSnapshot of the base; its snapshot
	// handle is looked up. BaseSnapshotHandle gives the handle directly
	// (the base snapshot may be gone). Neither: the allocated blocks.
	BaseSnapshot, BaseSnapshotHandle string
	// ServiceAccountNamespace and ServiceAccount the token is requested
	// for (required): in a mover pod, its own.
	ServiceAccountNamespace, ServiceAccount string
	// TokenTTL (default 1h).
	TokenTTL time.Duration
}

// Validate checks the arguments up front.
func (a *CBTArgs) Validate() error {
	switch {
	case a.Namespace == "" || a.Snapshot == "":
		return fmt.Errorf("%w: missing Namespace or Snapshot", ErrInvalidArgs)
	case a.ServiceAccountNamespace == "" || a.ServiceAccount == "":
		return fmt.Errorf("%w: missing ServiceAccount", ErrInvalidArgs)
	case a.BaseSnapshot != "" && a.BaseSnapshotHandle != "":
		return fmt.Errorf("%w: BaseSnapshot and BaseSnapshotHandle exclude each other", ErrInvalidArgs)
	}
	return nil
}

// CBTConnection is everything a SnapshotMetadata client needs: the
// service, a token with its audience and the base snapshot's handle. Dial
// makes the gRPC client; SnapshotMetadataArgs takes the rest.
type CBTConnection struct {
	Service        *SnapshotMetadataService
	Token          string
	TokenExpiry    time.Time
	Namespace      string
	Snapshot       string
	BaseSnapshotID string
}

// ConnectCBT finds the SnapshotMetadataService of the snapshot's driver,
// requests a token with its audience and resolves the base snapshot.
func (c *Clients) ConnectCBT(ctx context.Context, args CBTArgs) (*CBTConnection, error) {
	if err := args.Validate(); err != nil {
		return nil, err
	}
	driver, _, err := c.SnapshotDriver(ctx, args.Namespace, args.Snapshot)
	if err != nil {
		return nil, err
	}
	svc, err := c.FindSnapshotMetadataService(ctx, driver)
	if err != nil {
		return nil, err
	}
	token, exp, err := c.RequestToken(ctx, args.ServiceAccountNamespace, args.ServiceAccount, svc.Audience, args.TokenTTL)
	if err != nil {
		return nil, err
	}
	conn := &CBTConnection{Service: svc, Token: token, TokenExpiry: exp, Namespace: args.Namespace,
		Snapshot: args.Snapshot, BaseSnapshotID: args.BaseSnapshotHandle}
	if args.BaseSnapshot != "" {
		_, h, err := c.SnapshotDriver(ctx, args.Namespace, args.BaseSnapshot)
		if err != nil {
			return nil, fmt.Errorf("base: %w", err)
		}
		if h == "" {
			return nil, fmt.Errorf("base VolumeSnapshot %s/%s has no snapshot handle yet", args.Namespace, args.BaseSnapshot)
		}
		conn.BaseSnapshotID = h
	}
	return conn, nil
}

// Dial opens a gRPC client to the service over TLS verified with its CA.
// Close the returned io.Closer when done.
func (s *SnapshotMetadataService) Dial() (api.SnapshotMetadataClient, io.Closer, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(s.CACert) {
		return nil, nil, fmt.Errorf("SnapshotMetadataService %s: spec.caCert holds no PEM certificate", s.Driver)
	}
	host := s.Address
	if i := strings.LastIndex(host, ":"); i > 0 {
		host = host[:i]
	}
	conn, err := grpc.NewClient(s.Address, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		RootCAs: pool, ServerName: host, MinVersion: tls.VersionTLS12,
	})))
	if err != nil {
		return nil, nil, fmt.Errorf("SnapshotMetadataService %s at %s: %w", s.Driver, s.Address, err)
	}
	return api.NewSnapshotMetadataClient(conn), conn, nil
}

// Source returns the changes.ExtentSource over the connection and client.
func (cn *CBTConnection) Source(client api.SnapshotMetadataClient) (*SnapshotMetadata, error) {
	return NewSnapshotMetadata(SnapshotMetadataArgs{
		Client: client, SecurityToken: cn.Token, Namespace: cn.Namespace,
		Snapshot: cn.Snapshot, BaseSnapshotID: cn.BaseSnapshotID,
	})
}

// CollectChanges connects as args say (ConnectCBT, Dial) and returns the
// changed blocks (or, without a base, the allocated blocks) of the snapshot
// of a volume of size bytes. `mover k8s changes` runs it in the init
// container of an incremental mover Job.
func (c *Clients) CollectChanges(ctx context.Context, args CBTArgs, size int64) (changes.ChangeList, error) {
	conn, err := c.ConnectCBT(ctx, args)
	if err != nil {
		return nil, err
	}
	client, closer, err := conn.Service.Dial()
	if err != nil {
		return nil, err
	}
	defer closer.Close()
	src, err := conn.Source(client)
	if err != nil {
		return nil, err
	}
	return changes.CollectChanges(ctx, src, size)
}
