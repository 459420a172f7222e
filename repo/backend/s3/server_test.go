package s3

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/blockmover/blockmover/repo/backend/s3/s3test"
)

// The tests run against versitygw, a real S3 server, started by package
// s3test on a loopback port with a temporary posix directory.
// hack/install-versitygw.sh installs it. Without it the tests fail, unless
// BLOCKMOVER_SKIP_S3=1 says to skip them.

const (
	testAccessKey = s3test.AccessKey
	testSecretKey = s3test.SecretKey
	testRegion    = s3test.Region
)

// TestMain gives the SDK's default chain the test credentials and shields
// it from the developer's AWS configuration.
func TestMain(m *testing.M) {
	s3test.SetTestEnv()
	os.Exit(m.Run())
}

// testServer is one running versitygw.
type testServer struct{ *s3test.Server }

func startServer(tb testing.TB, withTLS bool) *testServer {
	return &testServer{s3test.Start(tb, withTLS)}
}

func (srv *testServer) client() *s3.Client { return srv.Client() }

func (srv *testServer) newBucket(tb testing.TB, lock bool) string { return srv.NewBucket(tb, lock) }

func freeAddr(tb testing.TB) string { return s3test.FreeAddr(tb) }

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
