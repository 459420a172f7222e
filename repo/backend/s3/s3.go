// Package s3 is a backend.Backend on Amazon S3 or any S3-compatible object
// store (MinIO, Ceph RGW, versitygw, …), built on aws-sdk-go-v2.
//
// # Layout
//
// A repository lives under Options.Prefix in Options.Bucket: the backend key
// "data/ab/ab12…" is stored as the object "<prefix>/data/ab/ab12…". ParseURL
// turns a repository URL "s3://bucket/prefix/path" into the two.
//
// # Configuration
//
// The endpoint, region and credentials come from the SDK's standard chain
// unless Options says otherwise: the endpoint from AWS_ENDPOINT_URL_S3,
// AWS_ENDPOINT_URL or endpoint_url in the shared config; the region from
// AWS_REGION or the shared config (us-east-1 when none is found, which suits
// most S3-compatible stores); credentials from the environment
// (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN), the shared
// credentials and config files (AWS_PROFILE), web identity
// (AWS_WEB_IDENTITY_TOKEN_FILE with AWS_ROLE_ARN, as on EKS with IRSA), the
// container credentials endpoint, and EC2 instance metadata. A CA bundle from
// AWS_CA_BUNDLE or the shared config is honoured too.
//
// # Semantics
//
// Put is create-only: it sends If-None-Match: * so the store itself refuses
// to overwrite an existing object (412 Precondition Failed, or 409
// ConditionalRequestConflict while another conditional write of the same key
// is in flight); both are reported as backend.ErrExists. AWS S3 supports
// conditional writes since August 2024, as do versitygw and recent MinIO;
// check other stores. A store that ignores the header would silently
// overwrite, which for a content-addressed repository means rewriting
// identical bytes, but for the few named objects (config, keys) loses the
// protection against two writers.
//
// With Options.ObjectLockDays > 0 every object is written with an Object Lock
// retention (COMPLIANCE by default, or GOVERNANCE) until now plus that many
// days, so neither this program nor stolen credentials can destroy a backup
// before then. The bucket must have been created with Object Lock enabled
// (which also enables versioning); Open checks that. Delete on such a bucket
// adds a delete marker: the object disappears from Get, Stat and List, but
// the locked version is kept until its retention ends, and after that until
// a lifecycle rule removes it. Give such a bucket a NoncurrentVersionExpiration
// rule of at least ObjectLockDays, or pruning the repository frees no space.
//
// # Retries
//
// The SDK's own retryer is disabled (aws.NopRetryer): every method makes
// exactly one attempt per HTTP request. Retries are added by wrapping the
// backend (backend.NewRetry), which sees the errors this package maps
// (ErrNotFound, ErrExists, ErrInvalidRange, ErrInvalidKey, ErrPermanent)
// and gives up at once on them, and retries everything else (5xx,
// throttling, network errors) with its own backoff that honours the context.
//
// # Errors
//
// Every error names the operation and the object as s3://bucket/prefix/key
// and wraps both the backend sentinel and the SDK's error (errors.As finds
// smithy.APIError). Denied access (403, AccessDenied, InvalidAccessKeyId,
// SignatureDoesNotMatch), a missing bucket (NoSuchBucket), a wrong region and
// requests the store will never accept wrap backend.ErrPermanent. A HEAD
// answer carries no error code, so Stat and Delete on a bucket removed after
// Open report ErrNotFound.
//
// # Checksums
//
// By default the SDK adds a CRC32 checksum to every PutObject (for HTTPS in
// an aws-chunked body with a trailing checksum header) and validates the
// checksum of whole-object GetObject responses when the store returns one.
// Some S3-compatible stores (older MinIO and Ceph RGW releases, several
// appliance and cloud-provider gateways) reject those trailers or the
// x-amz-checksum-* headers with errors such as 400 InvalidArgument,
// XAmzContentSHA256Mismatch or 501 NotImplemented. Set
// Options.ChecksumWhenRequired for such stores: checksums are then sent and
// validated only where an operation requires them. The repository loses
// nothing it relies on: it authenticates every blob with its own AEAD. With
// ChecksumWhenRequired and ObjectLockDays > 0, Put sends Content-MD5, which
// S3 requires for writes carrying Object Lock headers.
//
// # Concurrency
//
// A *Backend is safe for concurrent use by multiple goroutines. At most
// Options.MaxConns connections are open to the endpoint at a time; further
// requests wait for a free connection, so callers should size their I/O
// workers by Connections.
package s3

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/blockmover/blockmover/repo/backend"
)

// DefaultMaxConns is the connection limit used when Options.MaxConns is 0.
const DefaultMaxConns = 16

// defaultRegion is used when neither Options nor the SDK's configuration
// chain names a region. S3-compatible stores generally accept it.
const defaultRegion = "us-east-1"

// LockMode is the Object Lock retention mode of written objects.
type LockMode string

// Object Lock retention modes, as S3 names them.
const (
	// LockCompliance: nobody, not even the account root, can delete the
	// object or shorten its retention before it ends.
	LockCompliance LockMode = "COMPLIANCE"
	// LockGovernance: principals with s3:BypassGovernanceRetention can
	// remove the lock; everyone else is held to it.
	LockGovernance LockMode = "GOVERNANCE"
)

// Options configures Open. Only Bucket is required.
type Options struct {
	// Bucket is the bucket name. It must exist.
	Bucket string
	// Prefix is the "directory" inside the bucket that holds the
	// repository, e.g. "backups/cluster-a". Leading and trailing slashes
	// are ignored; empty means the bucket root.
	Prefix string
	// Endpoint is the base URL of the service, e.g. "https://minio.local:9000".
	// Empty means the SDK's standard resolution (AWS_ENDPOINT_URL_S3,
	// AWS_ENDPOINT_URL, shared config, else AWS S3 for Region).
	Endpoint string
	// Region signs the requests. Empty means AWS_REGION or the shared
	// config, else us-east-1.
	Region string
	// PathStyle addresses buckets as https://host/bucket/key instead of
	// https://bucket.host/key. Most S3-compatible stores need it.
	PathStyle bool
	// CABundle is the path of a PEM file of CA certificates to trust, in
	// addition to the system roots, for an endpoint with a private CA.
	CABundle string
	// ChecksumWhenRequired sends and validates the SDK's CRC checksums only
	// when an operation requires them; see the package documentation for
	// when to set it.
	ChecksumWhenRequired bool
	// ObjectLockDays > 0 writes every object with an Object Lock retention
	// of that many days. The bucket must have Object Lock enabled.
	ObjectLockDays int
	// ObjectLockMode is the retention mode used with ObjectLockDays;
	// empty means LockCompliance.
	ObjectLockMode LockMode
	// MaxConns limits the connections to the endpoint (HTTP
	// MaxConnsPerHost and MaxIdleConnsPerHost); 0 means DefaultMaxConns.
	MaxConns int
}

// Backend stores objects in an S3 bucket. Create it with Open.
//
// All methods, Close included, are safe for concurrent use by multiple
// goroutines and honour context cancellation. Calls in flight when Close
// is called finish normally; later calls fail with ErrPermanent.
type Backend struct {
	client   *s3.Client
	bucket   string
	prefix   string                            // "" or ends in "/"
	endpoint string                            // for messages
	lock     atomic.Pointer[backend.Retention] // nil: none
	md5Lock  bool                              // send Content-MD5 with Object Lock puts
	conns    int
	closed   atomic.Bool
}

var _ backend.Backend = (*Backend)(nil)

// Open connects to the bucket described by opts and checks that it is
// reachable with the configured credentials (HeadBucket), and, when
// ObjectLockDays > 0, that it has Object Lock enabled. Errors that
// retrying cannot fix (access denied, missing bucket, invalid options) wrap
// backend.ErrPermanent.
//
// ctx bounds only the checks made by Open; the returned Backend does not
// keep it.
func Open(ctx context.Context, opts Options) (*Backend, error) {
	if err := validateOptions(&opts); err != nil {
		return nil, fmt.Errorf("s3: %w: %w", err, backend.ErrPermanent)
	}

	conns := opts.MaxConns
	if conns == 0 {
		conns = DefaultMaxConns
	}
	var roots *x509.CertPool
	if opts.CABundle != "" {
		var err error
		if roots, err = loadCABundle(opts.CABundle); err != nil {
			return nil, fmt.Errorf("s3: %w: %w", err, backend.ErrPermanent)
		}
	}
	httpClient := awshttp.NewBuildableClient().WithTransportOptions(func(tr *http.Transport) {
		tr.MaxConnsPerHost = conns
		tr.MaxIdleConnsPerHost = conns
		if tr.MaxIdleConns < conns {
			tr.MaxIdleConns = conns
		}
		if roots != nil {
			if tr.TLSClientConfig == nil {
				tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
			}
			tr.TLSClientConfig.RootCAs = roots
		}
	})

	loadOpts := []func(*config.LoadOptions) error{
		config.WithHTTPClient(httpClient),
		config.WithRetryer(func() aws.Retryer { return aws.NopRetryer{} }),
	}
	if opts.Region != "" {
		loadOpts = append(loadOpts, config.WithRegion(opts.Region))
	}
	if opts.ChecksumWhenRequired {
		loadOpts = append(loadOpts,
			config.WithRequestChecksumCalculation(aws.RequestChecksumCalculationWhenRequired),
			config.WithResponseChecksumValidation(aws.ResponseChecksumValidationWhenRequired))
	}
	cfg, err := config.LoadDefaultConfig(ctx, loadOpts...)
	if err != nil {
		return nil, fmt.Errorf("s3: load AWS configuration: %w: %w", err, backend.ErrPermanent)
	}
	if cfg.Region == "" {
		cfg.Region = defaultRegion
	}

	client := s3.NewFromConfig(cfg, func(o *s3.Options) {
		if opts.Endpoint != "" {
			o.BaseEndpoint = aws.String(opts.Endpoint)
		}
		o.UsePathStyle = opts.PathStyle
		o.Retryer = aws.NopRetryer{}
		o.RetryMaxAttempts = 1
		// Ranged reads carry no whole-object checksum; don't log that
		// each time.
		o.DisableLogOutputChecksumValidationSkipped = true
	})

	b := &Backend{
		client:   client,
		bucket:   opts.Bucket,
		prefix:   opts.Prefix,
		endpoint: describeEndpoint(client.Options()),
		md5Lock:  opts.ChecksumWhenRequired,
		conns:    conns,
	}
	if err := b.checkBucket(ctx); err != nil {
		return nil, err
	}
	if opts.ObjectLockDays > 0 {
		r := backend.Retention{Days: opts.ObjectLockDays, Mode: backend.RetentionCompliance}
		if opts.ObjectLockMode == LockGovernance {
			r.Mode = backend.RetentionGovernance
		}
		if err := b.SetRetention(ctx, r); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// validateOptions checks opts and normalises Prefix to "" or "dir/".
func validateOptions(opts *Options) error {
	if opts.Bucket == "" {
		return errors.New("no bucket given")
	}
	if err := checkBucketName(opts.Bucket); err != nil {
		return err
	}
	p := strings.Trim(opts.Prefix, "/")
	if p != "" {
		if err := checkPrefix(p); err != nil {
			return err
		}
		p += "/"
	}
	opts.Prefix = p
	if opts.Endpoint != "" {
		u, err := url.Parse(opts.Endpoint)
		if err != nil {
			return fmt.Errorf("invalid endpoint %q: %w", opts.Endpoint, err)
		}
		if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("invalid endpoint %q: want http://host[:port] or https://host[:port]", opts.Endpoint)
		}
	}
	if opts.MaxConns < 0 {
		return fmt.Errorf("MaxConns is %d, must not be negative", opts.MaxConns)
	}
	if opts.ObjectLockDays < 0 {
		return fmt.Errorf("ObjectLockDays is %d, must not be negative", opts.ObjectLockDays)
	}
	if opts.ObjectLockDays > 36500 {
		return fmt.Errorf("ObjectLockDays is %d, must be at most 36500 (100 years)", opts.ObjectLockDays)
	}
	switch opts.ObjectLockMode {
	case "", LockCompliance, LockGovernance:
	default:
		return fmt.Errorf("ObjectLockMode %q: want %q or %q", opts.ObjectLockMode, LockCompliance, LockGovernance)
	}
	return nil
}

// loadCABundle returns the system roots plus the certificates of the PEM
// file at path.
func loadCABundle(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read CA bundle: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("CA bundle %s holds no PEM certificate", path)
	}
	return pool, nil
}

// describeEndpoint names the service for error messages.
func describeEndpoint(o s3.Options) string {
	if o.BaseEndpoint != nil && *o.BaseEndpoint != "" {
		return *o.BaseEndpoint
	}
	return "AWS S3 region " + o.Region
}

// checkBucket makes sure the bucket answers, and that it can hold locked
// objects if asked to.
func (b *Backend) checkBucket(ctx context.Context) error {
	_, err := b.client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(b.bucket)})
	if err != nil && httpStatus(err) != 0 {
		// A HEAD answer has no body, so the error code is only derived
		// from the status: versitygw, for one, answers 404 for an unknown
		// access key. A listing tells the real reason.
		_, lerr := b.client.ListObjectsV2(ctx, &s3.ListObjectsV2Input{
			Bucket: aws.String(b.bucket), Prefix: aws.String(b.prefix), MaxKeys: aws.Int32(1)})
		if lerr != nil && errorCode(lerr) != "" {
			err = lerr
		}
	}
	if err != nil {
		code, status := errorCode(err), httpStatus(err)
		switch {
		case status == http.StatusForbidden || isDenied(code):
			return fmt.Errorf("s3: access to bucket %q at %s denied (check the credentials and the bucket policy): %w: %w",
				b.bucket, b.endpoint, backend.ErrPermanent, err)
		case status == http.StatusNotFound || code == "NoSuchBucket":
			return fmt.Errorf("s3: bucket %q does not exist at %s: %w: %w", b.bucket, b.endpoint, backend.ErrPermanent, err)
		case status == http.StatusMovedPermanently || isWrongRegion(code):
			return fmt.Errorf("s3: bucket %q is not in region %s (set the region): %w: %w",
				b.bucket, b.client.Options().Region, backend.ErrPermanent, err)
		case status == http.StatusBadRequest:
			return fmt.Errorf("s3: bucket %q at %s: request refused: %w: %w", b.bucket, b.endpoint, backend.ErrPermanent, err)
		}
		return fmt.Errorf("s3: cannot reach bucket %q at %s: %w", b.bucket, b.endpoint, err)
	}
	return nil
}

// SetRetention makes every later Put write its object under r with an
// Object Lock retention, after checking that the bucket has Object Lock
// enabled (an error wrapping backend.ErrNoRetention and ErrPermanent when
// not). A zero r turns the retention off. Safe for concurrent use.
func (b *Backend) SetRetention(ctx context.Context, r backend.Retention) error {
	if r.Days <= 0 {
		b.lock.Store(nil)
		return nil
	}
	if r.Mode != backend.RetentionCompliance && r.Mode != backend.RetentionGovernance {
		return fmt.Errorf("s3: retention mode %q: %w", r.Mode, backend.ErrPermanent)
	}
	if cur := b.lock.Load(); cur != nil && *cur == r {
		return nil
	}
	if err := b.checkObjectLock(ctx, r.Days); err != nil {
		return err
	}
	b.lock.Store(&r)
	return nil
}

// Retention returns the retention Put applies now.
func (b *Backend) Retention() backend.Retention {
	if r := b.lock.Load(); r != nil {
		return *r
	}
	return backend.Retention{}
}

// checkObjectLock checks that the bucket has Object Lock enabled, for a
// retention of days.
func (b *Backend) checkObjectLock(ctx context.Context, days int) error {
	out, err := b.client.GetObjectLockConfiguration(ctx, &s3.GetObjectLockConfigurationInput{Bucket: aws.String(b.bucket)})
	if err != nil {
		code, status := errorCode(err), httpStatus(err)
		switch {
		case code == "ObjectLockConfigurationNotFoundError" || status == http.StatusNotFound:
			// handled below
		case status == http.StatusForbidden || isDenied(code):
			// Not allowed to read the configuration: Put will find out.
			return nil
		default:
			return fmt.Errorf("s3: read Object Lock configuration of bucket %q: %w", b.bucket, err)
		}
	}
	if out == nil || out.ObjectLockConfiguration == nil ||
		out.ObjectLockConfiguration.ObjectLockEnabled != types.ObjectLockEnabledEnabled {
		return fmt.Errorf("s3: ObjectLockDays is %d but bucket %q does not have Object Lock enabled "+
			"(it can only be enabled when the bucket is created): %w: %w", days, b.bucket, backend.ErrNoRetention, backend.ErrPermanent)
	}
	return nil
}

// Connections returns the maximum number of concurrent connections the
// backend opens, to size I/O worker pools.
func (b *Backend) Connections() int { return b.conns }

// String returns the repository location as an s3:// URL.
func (b *Backend) String() string {
	return "s3://" + b.bucket + "/" + strings.TrimSuffix(b.prefix, "/")
}

// Put stores data under key with If-None-Match: *, so an existing object is
// never overwritten: the store answers 412 and Put returns an error
// wrapping backend.ErrExists. The upload is a single PutObject, which S3
// makes visible atomically. data is not retained.
//
// Two answers make Put look at the key (HeadObject). If the connection
// breaks without an answer and the key now holds data (same size and MD5
// ETag), the upload succeeded and Put returns nil; if it holds something
// else, ErrExists. If the store answers 412 but the key reads as absent (a
// delete marker, which versitygw counts as an object), Put writes without
// the condition; see the comment in the code.
func (b *Backend) Put(ctx context.Context, key string, data []byte) error {
	if err := b.check("put", key); err != nil {
		return err
	}
	in := &s3.PutObjectInput{
		Bucket:        aws.String(b.bucket),
		Key:           aws.String(b.prefix + key),
		Body:          bytes.NewReader(data),
		ContentLength: aws.Int64(int64(len(data))),
		IfNoneMatch:   aws.String("*"),
	}
	if r := b.lock.Load(); r != nil {
		in.ObjectLockMode = types.ObjectLockModeCompliance
		if r.Mode == backend.RetentionGovernance {
			in.ObjectLockMode = types.ObjectLockModeGovernance
		}
		in.ObjectLockRetainUntilDate = aws.Time(time.Now().Add(time.Duration(r.Days) * 24 * time.Hour))
		if b.md5Lock {
			sum := md5.Sum(data)
			in.ContentMD5 = aws.String(base64.StdEncoding.EncodeToString(sum[:]))
		}
	}
	_, err := b.client.PutObject(ctx, in)
	switch {
	case err == nil || ctx.Err() != nil:
	case httpStatus(err) == 0:
		// No answer: the connection broke. Some stores (versitygw) refuse
		// an existing key with 412 before reading the body and close the
		// connection, so the client sees a reset instead of the 412; a
		// lost answer may also hide an upload that succeeded.
		switch b.existing(ctx, key, data) {
		case sameBytes:
			return nil
		case otherBytes:
			return fmt.Errorf("s3: put %s: %w (found after the upload failed: %v)", b.where(key), backend.ErrExists, err)
		}
	case httpStatus(err) == http.StatusPreconditionFailed:
		// Refused because the key exists, or, on versitygw (v1.8.0),
		// because its current version is a delete marker, which S3
		// treats as absent. Delete markers exist only in versioned
		// buckets, where a plain write destroys nothing: it adds a
		// version. So write plainly if the key reads as absent.
		if b.existing(ctx, key, data) == absent {
			in.IfNoneMatch = nil
			in.Body = bytes.NewReader(data)
			_, err = b.client.PutObject(ctx, in)
		}
	}
	return b.mapError("put", key, err)
}

type existence int

const (
	unknown    existence = iota // the HeadObject failed
	absent                      // no current version
	sameBytes                   // present with data's size and MD5 ETag
	otherBytes                  // present, and not provably data
)

// existing tells whether key holds data. The ETag of an object stored by a
// single PutObject without SSE-KMS is the hex MD5 of its bytes on AWS S3 and
// the common S3-compatible stores; anything else counts as other bytes.
func (b *Backend) existing(ctx context.Context, key string, data []byte) existence {
	out, err := b.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(b.bucket), Key: aws.String(b.prefix + key)})
	if err != nil {
		if errors.Is(b.mapError("stat", key, err), backend.ErrNotFound) {
			return absent
		}
		return unknown
	}
	if aws.ToInt64(out.ContentLength) != int64(len(data)) {
		return otherBytes
	}
	sum := md5.Sum(data)
	if strings.Trim(aws.ToString(out.ETag), `"`) == hex.EncodeToString(sum[:]) {
		return sameBytes
	}
	return otherBytes
}

// Get returns length bytes of key from offset; length < 0 reads to the end.
// It follows backend.Backend.Get: a range starting beyond the end, or a
// positive length running past it, is backend.ErrInvalidRange; a read of
// zero bytes at the very end (offset == size) returns an empty reader.
func (b *Backend) Get(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	if err := b.check("get", key); err != nil {
		return nil, err
	}
	if offset < 0 || (length > 0 && length > math.MaxInt64-offset) {
		return nil, fmt.Errorf("s3: get %s: offset %d, length %d: %w", b.where(key), offset, length, backend.ErrInvalidRange)
	}
	if length == 0 {
		// Nothing to read; S3 cannot express an empty range.
		info, err := b.Stat(ctx, key)
		if err != nil {
			return nil, err
		}
		if offset > info.Size {
			return nil, fmt.Errorf("s3: get %s: offset %d beyond size %d: %w", b.where(key), offset, info.Size, backend.ErrInvalidRange)
		}
		return http.NoBody, nil
	}

	in := &s3.GetObjectInput{Bucket: aws.String(b.bucket), Key: aws.String(b.prefix + key)}
	switch {
	case length > 0:
		in.Range = aws.String(fmt.Sprintf("bytes=%d-%d", offset, offset+length-1))
	case offset > 0:
		in.Range = aws.String(fmt.Sprintf("bytes=%d-", offset))
	}
	out, err := b.client.GetObject(ctx, in)
	if err != nil {
		err = b.mapError("get", key, err)
		if length < 0 && offset > 0 && errors.Is(err, backend.ErrInvalidRange) {
			// S3 answers 416 for "bytes=size-", which backend.Backend
			// defines as an empty read.
			info, serr := b.Stat(ctx, key)
			if serr != nil {
				return nil, serr
			}
			if offset == info.Size {
				return http.NoBody, nil
			}
		}
		return nil, err
	}
	if in.Range != nil && out.ContentRange == nil {
		// A store that ignores Range sends the whole object: never hand
		// that out as the range.
		out.Body.Close()
		return nil, fmt.Errorf("s3: get %s: the store ignored the Range header %q: %w",
			b.where(key), *in.Range, backend.ErrPermanent)
	}
	if length > 0 && out.ContentLength != nil && *out.ContentLength != length {
		// S3 shortens a range that runs past the end instead of refusing it.
		out.Body.Close()
		return nil, fmt.Errorf("s3: get %s: range %d+%d runs past the end (got %d bytes): %w",
			b.where(key), offset, length, *out.ContentLength, backend.ErrInvalidRange)
	}
	return out.Body, nil
}

// Stat describes key with a HeadObject, or returns an error wrapping
// backend.ErrNotFound.
func (b *Backend) Stat(ctx context.Context, key string) (backend.ObjectInfo, error) {
	if err := b.check("stat", key); err != nil {
		return backend.ObjectInfo{}, err
	}
	out, err := b.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(b.bucket), Key: aws.String(b.prefix + key)})
	if err != nil {
		return backend.ObjectInfo{}, b.mapError("stat", key, err)
	}
	info := backend.ObjectInfo{Key: key, Size: aws.ToInt64(out.ContentLength)}
	if out.LastModified != nil {
		info.ModTime = *out.LastModified
	}
	return info, nil
}

// List calls fn for every object whose key starts with prefix, page by page
// (ListObjectsV2, 1,000 keys a request). fn is called from the calling
// goroutine, one object at a time. Objects whose names are no valid
// backend key (folder markers ending in "/" made by consoles, stray
// temporary names; see backend.CheckKey) are skipped: they cannot be read
// through the backend either.
func (b *Backend) List(ctx context.Context, prefix string, fn func(backend.ObjectInfo) error) error {
	if b.closed.Load() {
		return b.closedError("list", prefix)
	}
	p := s3.NewListObjectsV2Paginator(b.client, &s3.ListObjectsV2Input{
		Bucket: aws.String(b.bucket),
		Prefix: aws.String(b.prefix + prefix),
	})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return b.mapError("list", prefix+"*", err)
		}
		for _, obj := range page.Contents {
			full := aws.ToString(obj.Key)
			key, ok := strings.CutPrefix(full, b.prefix)
			if !ok || backend.CheckKey(key) != nil {
				continue
			}
			info := backend.ObjectInfo{Key: key, Size: aws.ToInt64(obj.Size)}
			if obj.LastModified != nil {
				info.ModTime = *obj.LastModified
			}
			if err := fn(info); err != nil {
				return err
			}
		}
	}
	return nil
}

// Delete removes key. S3's DeleteObject succeeds for a missing key, so
// Delete first checks that the object exists (HeadObject) and returns an
// error wrapping backend.ErrNotFound if not. Two concurrent Deletes of one
// key may therefore both succeed.
func (b *Backend) Delete(ctx context.Context, key string) error {
	if _, err := b.Stat(ctx, key); err != nil {
		return err
	}
	_, err := b.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(b.bucket), Key: aws.String(b.prefix + key)})
	return b.mapError("delete", key, err)
}

// Close marks the backend closed; later calls fail. The SDK's HTTP client
// offers no way to close its idle connections: its transport drops them
// after 90 s without use. Close is idempotent.
func (b *Backend) Close() error {
	b.closed.Store(true)
	return nil
}

// check refuses calls after Close, and keys the backend cannot store with
// an error wrapping backend.ErrInvalidKey.
func (b *Backend) check(op, key string) error {
	if b.closed.Load() {
		return b.closedError(op, key)
	}
	if err := backend.CheckKey(key); err != nil {
		return fmt.Errorf("s3: %s %s: %w", op, b.where(key), err)
	}
	if n := len(b.prefix) + len(key); n > backend.MaxKeyLen {
		return fmt.Errorf("s3: %s %s: %w: with the prefix the object name is %d bytes, S3 allows %d",
			op, b.where(key), backend.ErrInvalidKey, n, backend.MaxKeyLen)
	}
	return nil
}

func (b *Backend) closedError(op, key string) error {
	return fmt.Errorf("s3: %s %s: backend is closed: %w", op, b.where(key), backend.ErrPermanent)
}

// where names an object for messages, as an s3:// URL.
func (b *Backend) where(key string) string {
	return "s3://" + b.bucket + "/" + b.prefix + key
}
