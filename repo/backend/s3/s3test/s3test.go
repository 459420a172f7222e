// Package s3test starts a real S3 server, versitygw, on a loopback port for
// tests: the repository's S3 backend tests and every test elsewhere that
// needs an s3:// repository. hack/install-versitygw.sh installs the binary;
// without it, Start fails the test with that advice, unless
// BLOCKMOVER_SKIP_S3=1 says to skip.
package s3test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"go/build"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// Credentials and region of every test server.
const (
	AccessKey = "blockmover-test"
	SecretKey = "blockmover-test-secret-key-0123456789"
	Region    = "us-east-1"
)

// Env returns the environment a mover process needs to reach a test
// server with the SDK's default chain: credentials, region, and nothing of
// the developer's own AWS configuration.
func Env() map[string]string {
	return map[string]string{
		"AWS_ACCESS_KEY_ID":           AccessKey,
		"AWS_SECRET_ACCESS_KEY":       SecretKey,
		"AWS_REGION":                  Region,
		"AWS_EC2_METADATA_DISABLED":   "true",
		"AWS_CONFIG_FILE":             os.DevNull,
		"AWS_SHARED_CREDENTIALS_FILE": os.DevNull,
	}
}

// SetTestEnv prepares this process's environment for the SDK's default
// chain: the test credentials, and none of the developer's AWS settings (in
// particular it never asks an instance metadata service). Call it from
// TestMain.
func SetTestEnv() {
	for _, k := range []string{
		"AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
		"AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
		"AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN", "AWS_CA_BUNDLE", "AWS_MAX_ATTEMPTS",
		"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
		"AWS_REQUEST_CHECKSUM_CALCULATION", "AWS_RESPONSE_CHECKSUM_VALIDATION",
	} {
		os.Unsetenv(k)
	}
	for k, v := range Env() {
		os.Setenv(k, v)
	}
}

// Server is one running versitygw.
type Server struct {
	Endpoint string         // http(s)://127.0.0.1:PORT
	CAFile   string         // PEM of the self-signed certificate, with TLS
	Root     string         // posix root directory: one subdirectory per bucket
	CAPool   *x509.CertPool // trusts the certificate, with TLS
	buckets  atomic.Int64
}

// VersitygwPath finds the versitygw binary: $VERSITYGW, else where
// hack/install-versitygw.sh puts it, else $PATH.
func VersitygwPath() (string, error) {
	if p := os.Getenv("VERSITYGW"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("versitygw not found: VERSITYGW=%s: %w", p, err)
		}
		return p, nil
	}
	var tried []string
	bin := os.Getenv("GOBIN")
	if bin == "" {
		gopath, _, _ := strings.Cut(build.Default.GOPATH, string(filepath.ListSeparator))
		bin = filepath.Join(gopath, "bin")
	}
	p := filepath.Join(bin, "versitygw")
	if st, err := os.Stat(p); err == nil && !st.IsDir() {
		return p, nil
	}
	tried = append(tried, p)
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p, nil
	}
	tried = append(tried, "$PATH")
	return "", fmt.Errorf("versitygw not found (looked in %s)", strings.Join(tried, ", "))
}

// Start starts versitygw for the test and stops it when the test
// ends. withTLS serves HTTPS with a fresh self-signed certificate.
func Start(tb testing.TB, withTLS bool) *Server {
	tb.Helper()
	if os.Getenv("BLOCKMOVER_SKIP_S3") == "1" {
		tb.Skip("BLOCKMOVER_SKIP_S3=1: skipping the tests that need versitygw")
	}
	bin, err := VersitygwPath()
	if err != nil {
		tb.Fatalf("%v.\nThe S3 tests need versitygw: run hack/install-versitygw.sh (or `make test`), "+
			"or set BLOCKMOVER_SKIP_S3=1 to skip them.", err)
	}
	dir := tb.TempDir()
	srv := &Server{Root: filepath.Join(dir, "root")}
	versions := filepath.Join(dir, "versions")
	for _, d := range []string{srv.Root, versions} {
		if err := os.Mkdir(d, 0o755); err != nil {
			tb.Fatal(err)
		}
	}
	var tlsArgs []string
	scheme := "http"
	if withTLS {
		scheme = "https"
		certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
		srv.CAPool = writeSelfSignedCert(tb, certFile, keyFile)
		srv.CAFile = certFile
		tlsArgs = []string{"--cert", certFile, "--key", keyFile}
	}

	// A port picked free may be taken before versitygw binds it: try again.
	for attempt := 1; ; attempt++ {
		addr := FreeAddr(tb)
		args := append([]string{
			"--access", AccessKey, "--secret", SecretKey, "--region", Region,
			"--port", addr, "--quiet", "--keep-alive",
		}, tlsArgs...)
		args = append(args, "posix", "--versioning-dir", versions, srv.Root)
		logFile := filepath.Join(dir, fmt.Sprintf("versitygw-%d.log", attempt))
		out, err := os.Create(logFile)
		if err != nil {
			tb.Fatal(err)
		}
		cmd := exec.Command(bin, args...)
		cmd.Stdout, cmd.Stderr = out, out
		setPdeathsig(cmd)
		if err := cmd.Start(); err != nil {
			out.Close()
			tb.Fatalf("start %s: %v", bin, err)
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); out.Close(); close(exited) }()
		stop := func() {
			cmd.Process.Kill()
			<-exited
		}
		srv.Endpoint = scheme + "://" + addr
		err = srv.waitReady(exited, 30*time.Second)
		if err == nil {
			tb.Cleanup(func() {
				stop()
				if tb.Failed() {
					log, _ := os.ReadFile(logFile)
					tb.Logf("versitygw output:\n%s", log)
				}
			})
			return srv
		}
		stop()
		log, _ := os.ReadFile(logFile)
		if attempt < 3 && bytes.Contains(log, []byte("address already in use")) {
			continue
		}
		tb.Fatalf("versitygw %s: %v\noutput:\n%s", strings.Join(args, " "), err, log)
	}
}

// waitReady polls the server until it answers HTTP (any status).
func (srv *Server) waitReady(exited <-chan struct{}, timeout time.Duration) error {
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: srv.CAPool, MinVersion: tls.VersionTLS12},
	}}
	defer client.CloseIdleConnections()
	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-exited:
			return errors.New("exited before answering")
		default:
		}
		resp, err := client.Get(srv.Endpoint + "/")
		if err == nil {
			resp.Body.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no answer after %v: %w", timeout, err)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// FreeAddr returns a loopback address whose port was free a moment ago.
func FreeAddr(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// writeSelfSignedCert writes a certificate for 127.0.0.1 and its key, and
// returns a pool that trusts it.
func writeSelfSignedCert(tb testing.TB, certFile, keyFile string) *x509.CertPool {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "blockmover test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		tb.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := os.WriteFile(certFile, certPEM, 0o644); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		tb.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(certPEM)
	return pool
}

// Client returns a plain SDK client with the test credentials, for setting
// up buckets and checking what the backend did.
func (srv *Server) Client() *s3.Client {
	httpClient := &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: srv.CAPool, MinVersion: tls.VersionTLS12},
	}}
	return s3.New(s3.Options{
		BaseEndpoint: aws.String(srv.Endpoint),
		Region:       Region,
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(AccessKey, SecretKey, ""),
		HTTPClient:   httpClient,
		Retryer:      aws.NopRetryer{},
	})
}

// NewBucket creates a bucket with a fresh name, with Object Lock (and so
// versioning) if lock is set.
func (srv *Server) NewBucket(tb testing.TB, lock bool) string {
	tb.Helper()
	name := fmt.Sprintf("bm-test-%d", srv.buckets.Add(1))
	in := &s3.CreateBucketInput{Bucket: aws.String(name)}
	if lock {
		in.ObjectLockEnabledForBucket = aws.Bool(true)
	}
	if _, err := srv.Client().CreateBucket(context.Background(), in); err != nil {
		tb.Fatalf("create bucket %s: %v", name, err)
	}
	return name
}
