package s3

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
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// The tests run against versitygw, a real S3 server, on a loopback port
// with a temporary posix directory. hack/install-versitygw.sh installs it.
// Without it the tests fail, unless BLOCKMOVER_SKIP_S3=1 says to skip them.

const (
	testAccessKey = "blockmover-test"
	testSecretKey = "blockmover-test-secret-key-0123456789"
	testRegion    = "us-east-1"
)

// TestMain gives the SDK's default chain the test credentials and shields
// it from the developer's AWS configuration; in particular it never asks
// an instance metadata service.
func TestMain(m *testing.M) {
	for _, k := range []string{
		"AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
		"AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
		"AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN", "AWS_CA_BUNDLE", "AWS_MAX_ATTEMPTS",
		"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
		"AWS_REQUEST_CHECKSUM_CALCULATION", "AWS_RESPONSE_CHECKSUM_VALIDATION",
	} {
		os.Unsetenv(k)
	}
	for k, v := range map[string]string{
		"AWS_ACCESS_KEY_ID":           testAccessKey,
		"AWS_SECRET_ACCESS_KEY":       testSecretKey,
		"AWS_REGION":                  testRegion,
		"AWS_EC2_METADATA_DISABLED":   "true",
		"AWS_CONFIG_FILE":             os.DevNull,
		"AWS_SHARED_CREDENTIALS_FILE": os.DevNull,
	} {
		os.Setenv(k, v)
	}
	os.Exit(m.Run())
}

// testServer is one running versitygw.
type testServer struct {
	Endpoint string // http(s)://127.0.0.1:PORT
	CAFile   string // PEM of the self-signed certificate, with TLS
	Root     string // posix root directory: one subdirectory per bucket
	caPool   *x509.CertPool
	buckets  atomic.Int64
}

// versitygwPath finds the versitygw binary: $VERSITYGW, else where
// hack/install-versitygw.sh puts it, else $PATH.
func versitygwPath() (string, error) {
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

// startServer starts versitygw for the test and stops it when the test
// ends. withTLS serves HTTPS with a fresh self-signed certificate.
func startServer(tb testing.TB, withTLS bool) *testServer {
	tb.Helper()
	if os.Getenv("BLOCKMOVER_SKIP_S3") == "1" {
		tb.Skip("BLOCKMOVER_SKIP_S3=1: skipping the tests that need versitygw")
	}
	bin, err := versitygwPath()
	if err != nil {
		tb.Fatalf("%v.\nThe S3 tests need versitygw: run hack/install-versitygw.sh (or `make test`), "+
			"or set BLOCKMOVER_SKIP_S3=1 to skip them.", err)
	}
	dir := tb.TempDir()
	srv := &testServer{Root: filepath.Join(dir, "root")}
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
		srv.caPool = writeSelfSignedCert(tb, certFile, keyFile)
		srv.CAFile = certFile
		tlsArgs = []string{"--cert", certFile, "--key", keyFile}
	}

	// A port picked free may be taken before versitygw binds it: try again.
	for attempt := 1; ; attempt++ {
		addr := freeAddr(tb)
		args := append([]string{
			"--access", testAccessKey, "--secret", testSecretKey, "--region", testRegion,
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
func (srv *testServer) waitReady(exited <-chan struct{}, timeout time.Duration) error {
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: srv.caPool, MinVersion: tls.VersionTLS12},
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

// freeAddr returns a loopback address whose port was free a moment ago.
func freeAddr(tb testing.TB) string {
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

// client returns a plain SDK client with the test credentials, for setting
// up buckets and checking what the backend did.
func (srv *testServer) client() *s3.Client {
	httpClient := &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: srv.caPool, MinVersion: tls.VersionTLS12},
	}}
	return s3.New(s3.Options{
		BaseEndpoint: aws.String(srv.Endpoint),
		Region:       testRegion,
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(testAccessKey, testSecretKey, ""),
		HTTPClient:   httpClient,
		Retryer:      aws.NopRetryer{},
	})
}

// newBucket creates a bucket with a fresh name, with Object Lock (and so
// versioning) if lock is set.
func (srv *testServer) newBucket(tb testing.TB, lock bool) string {
	tb.Helper()
	name := fmt.Sprintf("bm-test-%d", srv.buckets.Add(1))
	in := &s3.CreateBucketInput{Bucket: aws.String(name)}
	if lock {
		in.ObjectLockEnabledForBucket = aws.Bool(true)
	}
	if _, err := srv.client().CreateBucket(context.Background(), in); err != nil {
		tb.Fatalf("create bucket %s: %v", name, err)
	}
	return name
}

// open opens a backend on the server; Endpoint, PathStyle and, with TLS,
// CABundle are filled in. The backend is closed when the test ends.
func (srv *testServer) open(tb testing.TB, opts Options) *Backend {
	tb.Helper()
	if opts.Endpoint == "" {
		opts.Endpoint = srv.Endpoint
	}
	opts.PathStyle = true
	if opts.CABundle == "" {
		opts.CABundle = srv.CAFile
	}
	b, err := Open(context.Background(), opts)
	if err != nil {
		tb.Fatalf("Open(%+v): %v", opts, err)
	}
	tb.Cleanup(func() { b.Close() })
	return b
}

// connCounter is a TCP proxy in front of the server that records the
// largest number of connections open at once.
type connCounter struct {
	Addr  string
	mu    sync.Mutex
	cur   int
	max   int
	conns map[net.Conn]bool // open client-side connections
}

func newConnCounter(tb testing.TB, target string) *connCounter {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	c := &connCounter{Addr: l.Addr().String(), conns: make(map[net.Conn]bool)}
	var wg sync.WaitGroup
	tb.Cleanup(func() {
		l.Close()
		c.mu.Lock()
		for conn := range c.conns {
			conn.Close() // idle keep-alive connections
		}
		c.mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			in, err := l.Accept()
			if err != nil {
				return
			}
			c.mu.Lock()
			c.cur++
			c.max = max(c.max, c.cur)
			c.conns[in] = true
			c.mu.Unlock()
			wg.Go(func() {
				defer func() {
					c.mu.Lock()
					c.cur--
					delete(c.conns, in)
					c.mu.Unlock()
				}()
				c.forward(in, target)
			})
		}
	})
	return c
}

// forward copies between in and a new connection to target until either
// side closes.
func (c *connCounter) forward(in net.Conn, target string) {
	defer in.Close()
	out, err := net.Dial("tcp", target)
	if err != nil {
		return
	}
	defer out.Close()
	done := make(chan struct{}, 2)
	go func() { copyConn(out, in); done <- struct{}{} }()
	go func() { copyConn(in, out); done <- struct{}{} }()
	<-done
}

func copyConn(dst, src net.Conn) {
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (c *connCounter) Max() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.max
}

// replyDropper is an HTTP proxy in front of the server that can forward a
// PUT and then drop the connection instead of passing on the answer: a
// reply lost in the network.
type replyDropper struct {
	URL     string
	mu      sync.Mutex
	drop    int  // PUT answers still to drop
	forward bool // whether to forward the PUTs whose answers are dropped
}

func newReplyDropper(tb testing.TB, target string) *replyDropper {
	tb.Helper()
	d := &replyDropper{}
	tr := &http.Transport{}
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		drop, forward := false, true
		if r.Method == http.MethodPut {
			drop, forward = d.take()
		}
		hangUp := func() {
			if conn, _, err := w.(http.Hijacker).Hijack(); err == nil {
				conn.Close()
			}
		}
		if !forward {
			io.Copy(io.Discard, r.Body)
			hangUp()
			return
		}
		out := r.Clone(r.Context())
		out.RequestURI = ""
		out.URL.Scheme, out.URL.Host = "http", target // Host stays as the client signed it
		resp, err := tr.RoundTrip(out)
		if drop {
			// The answer (or the server's early reset) is lost.
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			hangUp()
			return
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, resp.Body)
	}))
	tb.Cleanup(func() { proxy.Close(); tr.CloseIdleConnections() })
	d.URL = proxy.URL
	return d
}

// dropNext makes the proxy drop the answers to the next n PUTs; forward
// says whether the server sees those PUTs at all.
func (d *replyDropper) dropNext(n int, forward bool) {
	d.mu.Lock()
	d.drop, d.forward = n, forward
	d.mu.Unlock()
}

// take reports whether to drop the answer to a PUT, and whether to
// forward it.
func (d *replyDropper) take() (drop, forward bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.drop > 0 {
		d.drop--
		return true, d.forward
	}
	return false, true
}
