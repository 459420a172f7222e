package s3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"golang.org/x/sync/errgroup"

	"github.com/blockmover/blockmover/repo/backend"
)

func randBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func TestBasics(t *testing.T) {
	srv := startServer(t, false)
	ctx := context.Background()
	b := srv.open(t, Options{Bucket: srv.newBucket(t, false), Prefix: "/repo/one/"})
	if got, want := b.String(), "s3://bm-test-1/repo/one"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}

	data := randBytes(1, 100_000)
	before := time.Now().Add(-time.Minute)
	if err := b.Put(ctx, "data/ab/abcdef", data); err != nil {
		t.Fatal(err)
	}
	if err := b.Put(ctx, "config", nil); err != nil {
		t.Fatal(err)
	}
	// The prefix is a directory of the bucket.
	if _, err := os.Stat(filepath.Join(srv.Root, "bm-test-1", "repo", "one", "data", "ab", "abcdef")); err != nil {
		t.Errorf("object not stored under the prefix: %v", err)
	}

	got, err := backend.ReadAll(ctx, b, "data/ab/abcdef", 0, -1)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("ReadAll = %d bytes, %v; want the %d bytes put", len(got), err, len(data))
	}
	got, err = backend.ReadAll(ctx, b, "config", 0, -1)
	if err != nil || len(got) != 0 {
		t.Fatalf("ReadAll(empty object) = %q, %v", got, err)
	}

	info, err := b.Stat(ctx, "data/ab/abcdef")
	if err != nil {
		t.Fatal(err)
	}
	if info.Key != "data/ab/abcdef" || info.Size != int64(len(data)) || info.ModTime.Before(before) || info.ModTime.After(time.Now().Add(time.Minute)) {
		t.Errorf("Stat = %+v", info)
	}

	var keys []string
	if err := b.List(ctx, "", func(oi backend.ObjectInfo) error { keys = append(keys, oi.Key); return nil }); err != nil {
		t.Fatal(err)
	}
	slices.Sort(keys)
	if want := []string{"config", "data/ab/abcdef"}; !slices.Equal(keys, want) {
		t.Errorf("List = %q, want %q", keys, want)
	}

	if err := b.Delete(ctx, "data/ab/abcdef"); err != nil {
		t.Fatal(err)
	}
	for name, err := range map[string]error{
		"Stat":   func() error { _, err := b.Stat(ctx, "data/ab/abcdef"); return err }(),
		"Get":    func() error { _, err := b.Get(ctx, "data/ab/abcdef", 0, -1); return err }(),
		"Get0":   func() error { _, err := b.Get(ctx, "data/ab/abcdef", 0, 0); return err }(),
		"GetEnd": func() error { _, err := b.Get(ctx, "data/ab/abcdef", 5, -1); return err }(),
		"Delete": b.Delete(ctx, "data/ab/abcdef"),
	} {
		if !errors.Is(err, backend.ErrNotFound) {
			t.Errorf("%s of a deleted key: %v, want ErrNotFound", name, err)
		} else if !strings.Contains(err.Error(), "s3://bm-test-1/repo/one/data/ab/abcdef") {
			t.Errorf("%s error %q does not name the object", name, err)
		}
	}

	// Another prefix in the same bucket is another repository.
	other := srv.open(t, Options{Bucket: "bm-test-1", Prefix: "repo/two"})
	n := 0
	if err := other.List(ctx, "", func(backend.ObjectInfo) error { n++; return nil }); err != nil || n != 0 {
		t.Errorf("List of another prefix: %d objects, %v", n, err)
	}
	// "repo/one" lists as "repo/one/…" only, not "repo/one-more/…".
	if err := srv.open(t, Options{Bucket: "bm-test-1", Prefix: "repo/o"}).Put(ctx, "x", []byte("x")); err != nil {
		t.Fatal(err)
	}
	keys = keys[:0]
	if err := b.List(ctx, "", func(oi backend.ObjectInfo) error { keys = append(keys, oi.Key); return nil }); err != nil {
		t.Fatal(err)
	}
	if want := []string{"config"}; !slices.Equal(keys, want) {
		t.Errorf("List = %q, want %q", keys, want)
	}
}

func TestRangedReads(t *testing.T) {
	srv := startServer(t, false)
	ctx := context.Background()
	b := srv.open(t, Options{Bucket: srv.newBucket(t, false)})
	const size = 1000
	data := randBytes(2, size)
	if err := b.Put(ctx, "obj", data); err != nil {
		t.Fatal(err)
	}
	if err := b.Put(ctx, "empty", nil); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		key            string
		offset, length int64
		want           []byte // nil: ErrInvalidRange
	}{
		{"obj", 0, -1, data},
		{"obj", 0, size, data},
		{"obj", 10, 20, data[10:30]},
		{"obj", 0, 1, data[:1]},
		{"obj", 999, 1, data[999:]},
		{"obj", 999, -1, data[999:]},
		{"obj", 500, -1, data[500:]},
		{"obj", 1000, -1, []byte{}},
		{"obj", 1000, 0, []byte{}},
		{"obj", 0, 0, []byte{}},
		{"obj", 500, 0, []byte{}},
		{"obj", 1000, 1, nil},
		{"obj", 1001, -1, nil},
		{"obj", 1001, 0, nil},
		{"obj", 990, 20, nil},
		{"obj", 0, 1001, nil},
		{"obj", -1, 5, nil},
		{"obj", -1, -1, nil},
		{"obj", 1 << 62, 1 << 62, nil},
		{"empty", 0, -1, []byte{}},
		{"empty", 0, 0, []byte{}},
		{"empty", 0, 1, nil},
		{"empty", 1, -1, nil},
	} {
		t.Run(fmt.Sprintf("%s/%d+%d", tc.key, tc.offset, tc.length), func(t *testing.T) {
			rc, err := b.Get(ctx, tc.key, tc.offset, tc.length)
			if tc.want == nil {
				if !errors.Is(err, backend.ErrInvalidRange) {
					t.Fatalf("Get: %v, want ErrInvalidRange", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Get: %v", err)
			}
			got, err := io.ReadAll(rc)
			if cerr := rc.Close(); err == nil {
				err = cerr
			}
			if err != nil || !bytes.Equal(got, tc.want) {
				t.Fatalf("read %d bytes, %v; want %d bytes", len(got), err, len(tc.want))
			}
		})
	}
	for _, r := range [][2]int64{{0, -1}, {0, 0}, {5, -1}, {5, 5}} {
		if _, err := b.Get(ctx, "missing", r[0], r[1]); !errors.Is(err, backend.ErrNotFound) {
			t.Errorf("Get(missing, %d, %d): %v, want ErrNotFound", r[0], r[1], err)
		}
	}
}

func TestListMany(t *testing.T) {
	srv := startServer(t, false)
	ctx := context.Background()
	b := srv.open(t, Options{Bucket: srv.newBucket(t, false), Prefix: "repo", MaxConns: 8})
	const n = 1500
	want := make(map[string]int64, n)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(b.Connections())
	for i := range n {
		key := fmt.Sprintf("data/%02x/%06d", i%256, i)
		size := int64(i % 7)
		want[key] = size
		g.Go(func() error { return b.Put(gctx, key, make([]byte, size)) })
	}
	// Objects outside the listed prefix, and a folder marker inside it.
	g.Go(func() error { return b.Put(gctx, "index/0001", []byte("i")) })
	g.Go(func() error { return b.Put(gctx, "config", []byte("c")) })
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.client().PutObject(ctx, &s3.PutObjectInput{
		Bucket: aws.String("bm-test-1"), Key: aws.String("repo/data/ff/"), Body: bytes.NewReader(nil),
	}); err != nil {
		t.Fatal(err)
	}

	got := make(map[string]int64, n)
	err := b.List(ctx, "data/", func(oi backend.ObjectInfo) error {
		if _, dup := got[oi.Key]; dup {
			t.Errorf("List reported %q twice", oi.Key)
		}
		if oi.ModTime.IsZero() {
			t.Errorf("List: %q has no ModTime", oi.Key)
		}
		got[oi.Key] = oi.Size
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != n {
		t.Errorf("List found %d objects, want %d", len(got), n)
	}
	for k, size := range want {
		if gs, ok := got[k]; !ok || gs != size {
			t.Errorf("List: %q size %d (found %v), want %d", k, gs, ok, size)
			break
		}
	}

	total := 0
	if err := b.List(ctx, "", func(backend.ObjectInfo) error { total++; return nil }); err != nil || total != n+2 {
		t.Errorf("List(\"\") = %d objects, %v; want %d", total, err, n+2)
	}
	// A partial path segment is a plain string prefix.
	count := 0
	if err := b.List(ctx, "data/0", func(backend.ObjectInfo) error { count++; return nil }); err != nil || count != 16*6 {
		t.Errorf("List(\"data/0\") = %d objects, %v; want %d", count, err, 16*6)
	}

	stop := errors.New("stop")
	calls := 0
	err = b.List(ctx, "data/", func(backend.ObjectInfo) error {
		calls++
		if calls == 1100 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || calls != 1100 {
		t.Errorf("List with fn failing at call 1100: %v after %d calls", err, calls)
	}
}

func TestPutRefusesOverwrite(t *testing.T) {
	srv := startServer(t, false)
	ctx := context.Background()
	b := srv.open(t, Options{Bucket: srv.newBucket(t, false)})
	first := []byte("first version")
	if err := b.Put(ctx, "keys/k", first); err != nil {
		t.Fatal(err)
	}
	err := b.Put(ctx, "keys/k", []byte("second, longer version"))
	if !errors.Is(err, backend.ErrExists) {
		t.Fatalf("second Put: %v, want ErrExists", err)
	}
	if errors.Is(err, backend.ErrPermanent) {
		t.Errorf("ErrExists also matches ErrPermanent: %v", err)
	}
	got, err := backend.ReadAll(ctx, b, "keys/k", 0, -1)
	if err != nil || !bytes.Equal(got, first) {
		t.Fatalf("after refused overwrite: %q, %v; want %q", got, err, first)
	}
	if err := b.Put(ctx, "keys/k", first); !errors.Is(err, backend.ErrExists) {
		t.Errorf("Put of identical bytes: %v, want ErrExists", err)
	}
	// Large bodies too: versitygw answers 412 before reading the body and
	// resets the connection, which the client sees as a broken write.
	big := randBytes(5, 16<<20)
	if err := b.Put(ctx, "data/big", big); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		err := b.Put(ctx, "data/big", randBytes(uint64(6+i), 16<<20))
		t.Logf("overwrite %d: %v", i, err)
		if !errors.Is(err, backend.ErrExists) {
			t.Errorf("overwrite %d of a 16 MiB object: %v, want ErrExists", i, err)
		}
	}
	if got, err := backend.ReadAll(ctx, b, "data/big", 0, -1); err != nil || !bytes.Equal(got, big) {
		t.Errorf("16 MiB object changed by refused overwrites (%v)", err)
	}

	// Racing writers of one key: exactly one wins, the others see ErrExists,
	// and the object holds the winner's bytes whole.
	const writers = 8
	errs := make([]error, writers)
	var wg sync.WaitGroup
	for i := range writers {
		wg.Go(func() { errs[i] = b.Put(ctx, "race", randBytes(uint64(100+i), 256<<10)) })
	}
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Errorf("writers %d and %d both succeeded", winner, i)
		case err == nil:
			winner = i
		case !errors.Is(err, backend.ErrExists):
			t.Errorf("writer %d: %v, want nil or ErrExists", i, err)
		}
	}
	if winner >= 0 {
		got, err := backend.ReadAll(ctx, b, "race", 0, -1)
		if err != nil || !bytes.Equal(got, randBytes(uint64(100+winner), 256<<10)) {
			t.Errorf("raced object does not hold the winner's bytes (%v)", err)
		}
	} else {
		t.Error("no writer succeeded")
	}
}

func TestInvalidKeys(t *testing.T) {
	srv := startServer(t, false)
	ctx := context.Background()
	// A prefix of 1000 bytes, in components a posix store can hold.
	prefix := strings.Repeat(strings.Repeat("p", 99)+"/", 10)[:999] + "p"
	b := srv.open(t, Options{Bucket: srv.newBucket(t, false), Prefix: prefix})
	for _, key := range []string{"", "/abs", "a//b", "a/", "../x", "a/./b", "a\x00b", "a\\b", strings.Repeat("k", 30)} {
		if err := b.Put(ctx, key, []byte("x")); !errors.Is(err, backend.ErrInvalidKey) {
			t.Errorf("Put(%q): %v, want ErrInvalidKey", key, err)
		}
		if _, err := b.Stat(ctx, key); !errors.Is(err, backend.ErrInvalidKey) {
			t.Errorf("Stat(%q): %v, want ErrInvalidKey", key, err)
		}
		if _, err := b.Get(ctx, key, 0, -1); !errors.Is(err, backend.ErrInvalidKey) {
			t.Errorf("Get(%q): %v, want ErrInvalidKey", key, err)
		}
		if err := b.Delete(ctx, key); !errors.Is(err, backend.ErrInvalidKey) {
			t.Errorf("Delete(%q): %v, want ErrInvalidKey", key, err)
		}
	}
	if err := b.Put(ctx, strings.Repeat("k", 23), []byte("x")); err != nil {
		t.Errorf("Put of a key that just fits: %v", err)
	}
}

// wrongSecret returns a copy of b that signs with a wrong secret key.
func wrongSecret(b *Backend) *Backend {
	c := &Backend{client: s3.New(b.client.Options(), func(o *s3.Options) {
		o.Credentials = credentials.NewStaticCredentialsProvider(testAccessKey, "not-the-secret", "")
		// The signer caches signing keys by access key, not secret: a
		// fresh one, and auth schemes that use it.
		o.HTTPSignerV4 = v4.NewSigner()
		o.AuthSchemes = nil
	})}
	c.bucket, c.prefix, c.endpoint, c.conns = b.bucket, b.prefix, b.endpoint, b.conns
	return c
}

// everyOp runs each Backend method against key and returns their errors.
func everyOp(ctx context.Context, b backend.Backend, key string) map[string]error {
	return map[string]error{
		"Put":  b.Put(ctx, key, []byte("data")),
		"Get":  func() error { _, err := b.Get(ctx, key, 0, -1); return err }(),
		"Stat": func() error { _, err := b.Stat(ctx, key); return err }(),
		"List": b.List(ctx, "", func(backend.ObjectInfo) error { return nil }),
		"Del":  b.Delete(ctx, key),
	}
}

func TestWrongSecretKey(t *testing.T) {
	srv := startServer(t, false)
	ctx := context.Background()
	bucket := srv.newBucket(t, false)
	good := srv.open(t, Options{Bucket: bucket, Prefix: "repo"})
	if err := good.Put(ctx, "config", []byte("c")); err != nil {
		t.Fatal(err)
	}

	t.Run("Open", func(t *testing.T) {
		t.Setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
		_, err := Open(ctx, Options{Bucket: bucket, Endpoint: srv.Endpoint, PathStyle: true})
		if !errors.Is(err, backend.ErrPermanent) {
			t.Fatalf("Open: %v, want ErrPermanent", err)
		}
		if msg := err.Error(); !strings.Contains(msg, `"`+bucket+`"`) || !strings.Contains(msg, "denied") {
			t.Errorf("Open error %q does not say access to the bucket was denied", msg)
		}
	})
	t.Run("OpenUnknownAccessKey", func(t *testing.T) {
		t.Setenv("AWS_ACCESS_KEY_ID", "nobody")
		_, err := Open(ctx, Options{Bucket: bucket, Endpoint: srv.Endpoint, PathStyle: true})
		if !errors.Is(err, backend.ErrPermanent) {
			t.Fatalf("Open: %v, want ErrPermanent", err)
		}
		if msg := err.Error(); !strings.Contains(msg, `"`+bucket+`"`) || !strings.Contains(msg, "denied") {
			t.Errorf("Open error %q does not say access to the bucket was denied", msg)
		}
	})

	bad := wrongSecret(good)
	for op, err := range everyOp(ctx, bad, "config") {
		if !errors.Is(err, backend.ErrPermanent) {
			t.Errorf("%s: %v, want ErrPermanent", op, err)
			continue
		}
		if errors.Is(err, backend.ErrNotFound) || errors.Is(err, backend.ErrExists) {
			t.Errorf("%s: %v also matches another sentinel", op, err)
		}
		if msg := err.Error(); !strings.Contains(msg, "s3://"+bucket+"/repo/") || !strings.Contains(msg, "denied") {
			t.Errorf("%s error %q does not name bucket and key, or the reason", op, msg)
		}
	}
	// The object survived.
	if got, err := backend.ReadAll(ctx, good, "config", 0, -1); err != nil || string(got) != "c" {
		t.Errorf("after the failed calls: %q, %v", got, err)
	}
}

func TestMissingBucket(t *testing.T) {
	srv := startServer(t, false)
	ctx := context.Background()
	_, err := Open(ctx, Options{Bucket: "no-such-bucket", Endpoint: srv.Endpoint, PathStyle: true})
	if !errors.Is(err, backend.ErrPermanent) {
		t.Fatalf("Open: %v, want ErrPermanent", err)
	}
	if msg := err.Error(); !strings.Contains(msg, `bucket "no-such-bucket" does not exist`) {
		t.Errorf("Open error %q does not say the bucket is missing", msg)
	}

	// A bucket removed after Open.
	bucket := srv.newBucket(t, false)
	b := srv.open(t, Options{Bucket: bucket})
	if _, err := srv.client().DeleteBucket(ctx, &s3.DeleteBucketInput{Bucket: aws.String(bucket)}); err != nil {
		t.Fatal(err)
	}
	for op, err := range everyOp(ctx, b, "k") {
		switch op {
		case "Stat", "Del":
			// HEAD answers carry no error code: a missing bucket looks
			// like a missing object.
			if !errors.Is(err, backend.ErrNotFound) && !errors.Is(err, backend.ErrPermanent) {
				t.Errorf("%s: %v, want ErrNotFound or ErrPermanent", op, err)
			}
		default:
			if !errors.Is(err, backend.ErrPermanent) || !strings.Contains(err.Error(), "does not exist") {
				t.Errorf("%s: %v, want ErrPermanent saying the bucket does not exist", op, err)
			}
		}
	}
}

func TestUnreachable(t *testing.T) {
	// A port nobody listens on; Open must fail fast with a clear message,
	// and not as a permanent error: the server may come back.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	endpoint := "http://" + freeAddr(t)
	_, err := Open(ctx, Options{Bucket: "bucket", Endpoint: endpoint, PathStyle: true})
	if err == nil || errors.Is(err, backend.ErrPermanent) {
		t.Fatalf("Open: %v, want a non-permanent error", err)
	}
	if msg := err.Error(); !strings.Contains(msg, "cannot reach bucket") || !strings.Contains(msg, endpoint) {
		t.Errorf("Open error %q does not name bucket and endpoint", msg)
	}
}

func TestOptionsInvalid(t *testing.T) {
	ctx := context.Background()
	for _, opts := range []Options{
		{},
		{Bucket: "b"},
		{Bucket: "bad/bucket"},
		{Bucket: "bucket", Prefix: "a//b"},
		{Bucket: "bucket", Prefix: "../up"},
		{Bucket: "bucket", Endpoint: "localhost:9000"},
		{Bucket: "bucket", Endpoint: "ftp://host"},
		{Bucket: "bucket", Endpoint: "http://"},
		{Bucket: "bucket", MaxConns: -1},
		{Bucket: "bucket", ObjectLockDays: -1},
		{Bucket: "bucket", ObjectLockDays: 1, ObjectLockMode: "compliance"},
		{Bucket: "bucket", CABundle: filepath.Join(t.TempDir(), "missing.pem")},
		{Bucket: "bucket", CABundle: os.Args[0]},
	} {
		_, err := Open(ctx, opts)
		if !errors.Is(err, backend.ErrPermanent) {
			t.Errorf("Open(%+v): %v, want ErrPermanent", opts, err)
		} else {
			t.Logf("Open(%+v): %v", opts, err)
		}
	}
}

func TestClosed(t *testing.T) {
	srv := startServer(t, false)
	ctx := context.Background()
	b := srv.open(t, Options{Bucket: srv.newBucket(t, false)})
	if err := b.Put(ctx, "k", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	for op, err := range everyOp(ctx, b, "k") {
		if !errors.Is(err, backend.ErrPermanent) || !strings.Contains(err.Error(), "closed") {
			t.Errorf("%s after Close: %v", op, err)
		}
	}
}

func TestContextCanceled(t *testing.T) {
	srv := startServer(t, false)
	b := srv.open(t, Options{Bucket: srv.newBucket(t, false)})
	ctx, cancel := context.WithCancel(context.Background())
	if err := b.Put(ctx, "k", []byte("x")); err != nil {
		t.Fatal(err)
	}
	cancel()
	for op, err := range everyOp(ctx, b, "k") {
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a canceled context: %v", op, err)
		}
	}
	if _, err := Open(ctx, Options{Bucket: "bm-test-1", Endpoint: srv.Endpoint, PathStyle: true}); !errors.Is(err, context.Canceled) {
		t.Errorf("Open with a canceled context: %v", err)
	}
}

func TestEndpointFromEnvironment(t *testing.T) {
	srv := startServer(t, false)
	bucket := srv.newBucket(t, false)
	t.Setenv("AWS_ENDPOINT_URL", srv.Endpoint)
	t.Setenv("AWS_REGION", "")
	b, err := Open(context.Background(), Options{Bucket: bucket, PathStyle: true})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.Put(context.Background(), "k", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if r := b.client.Options().Region; r != "us-east-1" {
		t.Errorf("region without configuration = %q, want us-east-1", r)
	}
}

func TestTLSWithCABundle(t *testing.T) {
	srv := startServer(t, true)
	ctx := context.Background()
	bucket := srv.newBucket(t, false)
	b := srv.open(t, Options{Bucket: bucket}) // open sets CABundle
	data := randBytes(3, 3<<20)
	if err := b.Put(ctx, "data/x", data); err != nil {
		t.Fatal(err)
	}
	if got, err := backend.ReadAll(ctx, b, "data/x", 1<<20, 1<<20); err != nil || !bytes.Equal(got, data[1<<20:2<<20]) {
		t.Fatalf("ranged read over TLS: %d bytes, %v", len(got), err)
	}

	// Without the bundle the certificate is not trusted.
	_, err := Open(ctx, Options{Bucket: bucket, Endpoint: srv.Endpoint, PathStyle: true, CABundle: os.DevNull})
	if err == nil {
		t.Fatal("Open with an empty CA bundle succeeded")
	}
	_, err = Open(ctx, Options{Bucket: bucket, Endpoint: srv.Endpoint, PathStyle: true})
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("Open without the CA bundle: %v, want a certificate error", err)
	}
}

func TestChecksumWhenRequired(t *testing.T) {
	srv := startServer(t, false)
	ctx := context.Background()
	for _, whenRequired := range []bool{false, true} {
		b := srv.open(t, Options{Bucket: srv.newBucket(t, false), ChecksumWhenRequired: whenRequired})
		data := randBytes(4, 5<<20+3)
		if err := b.Put(ctx, "blob", data); err != nil {
			t.Fatalf("ChecksumWhenRequired=%v: Put: %v", whenRequired, err)
		}
		got, err := backend.ReadAll(ctx, b, "blob", 0, -1)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("ChecksumWhenRequired=%v: read %d bytes, %v", whenRequired, len(got), err)
		}
		if err := b.Put(ctx, "blob", append(data, 1)); !errors.Is(err, backend.ErrExists) {
			t.Errorf("ChecksumWhenRequired=%v: overwrite: %v", whenRequired, err)
		}
	}
}

func TestMaxConns(t *testing.T) {
	srv := startServer(t, false)
	ctx := context.Background()
	bucket := srv.newBucket(t, false)
	proxy := newConnCounter(t, strings.TrimPrefix(srv.Endpoint, "http://"))
	const limit = 3
	b := srv.open(t, Options{Bucket: bucket, Endpoint: "http://" + proxy.Addr, MaxConns: limit})
	if b.Connections() != limit {
		t.Errorf("Connections() = %d, want %d", b.Connections(), limit)
	}
	g, gctx := errgroup.WithContext(ctx)
	for i := range 40 {
		g.Go(func() error { return b.Put(gctx, fmt.Sprintf("k/%d", i), randBytes(uint64(i), 64<<10)) })
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	if m := proxy.Max(); m > limit || m < 1 {
		t.Errorf("at most %d connections open at once, want 1..%d", m, limit)
	}
	if d := srv.open(t, Options{Bucket: bucket}); d.Connections() != DefaultMaxConns {
		t.Errorf("default Connections() = %d, want %d", d.Connections(), DefaultMaxConns)
	}
}

func TestObjectLock(t *testing.T) {
	srv := startServer(t, false)
	ctx := context.Background()
	raw := srv.client()

	// Without Object Lock on the bucket, Open refuses ObjectLockDays.
	_, err := Open(ctx, Options{Bucket: srv.newBucket(t, false), Endpoint: srv.Endpoint, PathStyle: true, ObjectLockDays: 1})
	if !errors.Is(err, backend.ErrPermanent) || !strings.Contains(err.Error(), "Object Lock") {
		t.Fatalf("Open with ObjectLockDays on a bucket without Object Lock: %v", err)
	}

	for _, tc := range []struct {
		mode         LockMode
		whenRequired bool
		want         types.ObjectLockRetentionMode
	}{
		{"", false, types.ObjectLockRetentionModeCompliance},
		{LockGovernance, false, types.ObjectLockRetentionModeGovernance},
		{LockCompliance, true, types.ObjectLockRetentionModeCompliance},
	} {
		t.Run(fmt.Sprintf("%s/whenRequired=%v", tc.want, tc.whenRequired), func(t *testing.T) {
			bucket := srv.newBucket(t, true)
			b := srv.open(t, Options{Bucket: bucket, Prefix: "repo", ObjectLockDays: 2,
				ObjectLockMode: tc.mode, ChecksumWhenRequired: tc.whenRequired})
			start := time.Now()
			if err := b.Put(ctx, "snapshots/s1", []byte("snapshot")); err != nil {
				t.Fatal(err)
			}
			if err := b.Put(ctx, "snapshots/s1", []byte("other")); !errors.Is(err, backend.ErrExists) {
				t.Errorf("overwrite of a locked object: %v, want ErrExists", err)
			}
			ret, err := raw.GetObjectRetention(ctx, &s3.GetObjectRetentionInput{
				Bucket: aws.String(bucket), Key: aws.String("repo/snapshots/s1")})
			if err != nil {
				t.Fatal(err)
			}
			until := aws.ToTime(ret.Retention.RetainUntilDate)
			if ret.Retention.Mode != tc.want ||
				until.Before(start.Add(48*time.Hour-time.Minute)) || until.After(time.Now().Add(48*time.Hour+time.Minute)) {
				t.Errorf("retention = %s until %v, want %s until about %v", ret.Retention.Mode, until, tc.want, start.Add(48*time.Hour))
			}

			// The locked version cannot be destroyed…
			head, err := raw.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String("repo/snapshots/s1")})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := raw.DeleteObject(ctx, &s3.DeleteObjectInput{
				Bucket: aws.String(bucket), Key: aws.String("repo/snapshots/s1"), VersionId: head.VersionId,
			}); err == nil {
				t.Error("deleting the locked version succeeded")
			}
			// …but Delete hides it behind a delete marker.
			if err := b.Delete(ctx, "snapshots/s1"); err != nil {
				t.Fatalf("Delete: %v", err)
			}
			if _, err := b.Stat(ctx, "snapshots/s1"); !errors.Is(err, backend.ErrNotFound) {
				t.Errorf("Stat after Delete: %v, want ErrNotFound", err)
			}
			if _, err := raw.HeadObject(ctx, &s3.HeadObjectInput{
				Bucket: aws.String(bucket), Key: aws.String("repo/snapshots/s1"), VersionId: head.VersionId,
			}); err != nil {
				t.Errorf("the locked version is gone after Delete: %v", err)
			}
			// Behind a delete marker the key can be written again.
			if err := b.Put(ctx, "snapshots/s1", []byte("again")); err != nil {
				t.Errorf("Put after Delete: %v", err)
			}
			if got, err := backend.ReadAll(ctx, b, "snapshots/s1", 0, -1); err != nil || string(got) != "again" {
				t.Errorf("after Put over a delete marker: %q, %v", got, err)
			}
		})
	}
}

func TestPutLostReply(t *testing.T) {
	srv := startServer(t, false)
	ctx := context.Background()
	bucket := srv.newBucket(t, false)
	proxy := newReplyDropper(t, strings.TrimPrefix(srv.Endpoint, "http://"))
	b := srv.open(t, Options{Bucket: bucket, Endpoint: proxy.URL})
	direct := srv.open(t, Options{Bucket: bucket})
	data := randBytes(7, 3<<20)

	// The upload succeeded but its answer was lost: Put finds its own
	// bytes and succeeds.
	proxy.dropNext(1, true)
	if err := b.Put(ctx, "data/lost", data); err != nil {
		t.Fatalf("Put with the answer lost: %v, want nil", err)
	}
	if got, err := backend.ReadAll(ctx, direct, "data/lost", 0, -1); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("stored object: %d bytes, %v", len(got), err)
	}
	// The store refused other bytes and the 412 was lost: ErrExists.
	proxy.dropNext(1, true)
	other := randBytes(8, 3<<20)
	if err := b.Put(ctx, "data/lost", other); !errors.Is(err, backend.ErrExists) {
		t.Errorf("overwrite with the answer lost: %v, want ErrExists", err)
	}
	// The same bytes again, 412 lost: the bytes are there, so nil (the
	// contract allows nil or ErrExists).
	proxy.dropNext(1, true)
	if err := b.Put(ctx, "data/lost", data); err != nil {
		t.Errorf("same bytes with the answer lost: %v, want nil", err)
	}
	if got, err := backend.ReadAll(ctx, direct, "data/lost", 0, -1); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("object changed: %d bytes, %v", len(got), err)
	}
	// The request never arrived: a plain error, which the Retry wrapper
	// retries, and nothing stored.
	proxy.dropNext(1, false)
	err := b.Put(ctx, "data/never", data)
	if err == nil || errors.Is(err, backend.ErrExists) || errors.Is(err, backend.ErrPermanent) {
		t.Errorf("Put that never arrived: %v, want a transient error", err)
	}
	if _, err := direct.Stat(ctx, "data/never"); !errors.Is(err, backend.ErrNotFound) {
		t.Errorf("Stat of the Put that never arrived: %v, want ErrNotFound", err)
	}
}

// TestOpenRetriedWhileServerAway: the first requests of Open find the
// server away (connections closed at once, as while it restarts); under
// backend.RetryCall, as the CLI opens S3, Open succeeds once it is back.
func TestOpenRetriedWhileServerAway(t *testing.T) {
	srv := startServer(t, false)
	bucket := srv.newBucket(t, false)
	target := strings.TrimPrefix(srv.Endpoint, "http://")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var dropped atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if dropped.Add(1) <= 3 {
				c.Close() // away
				continue
			}
			go func() {
				defer c.Close()
				u, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer u.Close()
				go io.Copy(u, c)
				io.Copy(c, u)
			}()
		}
	}()
	opts := Options{Bucket: bucket, Endpoint: "http://" + ln.Addr().String(), PathStyle: true}
	retry := backend.RetryOptions{MaxAttempts: 10, InitialDelay: time.Millisecond, MaxDelay: 10 * time.Millisecond}
	var b *Backend
	err = backend.RetryCall(t.Context(), retry, backend.OpStat, "bucket", func(ctx context.Context) error {
		var err error
		b, err = Open(ctx, opts)
		return err
	})
	if err != nil {
		t.Fatalf("Open under RetryCall: %v", err)
	}
	defer b.Close()
	if dropped.Load() <= 3 {
		t.Fatalf("%d connections reached the proxy; the test did not drop any", dropped.Load())
	}
	if err := b.Put(t.Context(), "x", []byte("x")); err != nil {
		t.Fatalf("Put after the server came back: %v", err)
	}
}
