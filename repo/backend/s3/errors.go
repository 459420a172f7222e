package s3

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/smithy-go"

	"github.com/blockmover/blockmover/repo/backend"
)

// mapError turns an SDK error from operation op on key into one that wraps
// the backend sentinel it stands for, and always the SDK error too (so
// errors.As still finds smithy.APIError and friends). The message names the
// bucket and the full object name.
func (b *Backend) mapError(op, key string, err error) error {
	if err == nil {
		return nil
	}
	where := b.where(key)
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("s3: %s %s: %w", op, where, err)
	}
	code, status := errorCode(err), httpStatus(err)
	switch {
	case code == "NoSuchBucket":
		// Before the status checks: this 404 is not a missing object.
		return fmt.Errorf("s3: %s %s: bucket %q does not exist at %s: %w: %w",
			op, where, b.bucket, b.endpoint, backend.ErrPermanent, err)
	case status == http.StatusForbidden || isDenied(code):
		return fmt.Errorf("s3: %s %s: access denied (check the credentials and the policy of bucket %q): %w: %w",
			op, where, b.bucket, backend.ErrPermanent, err)
	case status == http.StatusMovedPermanently || isWrongRegion(code):
		return fmt.Errorf("s3: %s %s: bucket %q is not in region %s (set the region): %w: %w",
			op, where, b.bucket, b.client.Options().Region, backend.ErrPermanent, err)
	case code == "NoSuchKey" || code == "NotFound" || status == http.StatusNotFound:
		return fmt.Errorf("s3: %s %s: %w: %w", op, where, backend.ErrNotFound, err)
	case status == http.StatusRequestedRangeNotSatisfiable || code == "InvalidRange":
		return fmt.Errorf("s3: %s %s: %w: %w", op, where, backend.ErrInvalidRange, err)
	case op == "put" && (status == http.StatusPreconditionFailed || code == "PreconditionFailed" ||
		code == "ConditionalRequestConflict"):
		return fmt.Errorf("s3: %s %s: %w: %w", op, where, backend.ErrExists, err)
	case status == http.StatusNotImplemented || code == "NotImplemented":
		return fmt.Errorf("s3: %s %s: the store does not implement this request "+
			"(if it rejects checksum headers, set ChecksumWhenRequired): %w: %w",
			op, where, backend.ErrPermanent, err)
	case status == http.StatusMethodNotAllowed || isInvalidRequest(code):
		return fmt.Errorf("s3: %s %s: request refused: %w: %w", op, where, backend.ErrPermanent, err)
	}
	return fmt.Errorf("s3: %s %s: %w", op, where, err)
}

// errorCode returns the S3 error code ("NoSuchKey", "AccessDenied", …) of
// err, or "". For HEAD requests, which have no body, the SDK derives it
// from the status ("NotFound", "Forbidden", …).
func errorCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// httpStatus returns the HTTP status of the response that caused err, or 0.
func httpStatus(err error) int {
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

// isDenied reports codes meaning the credentials may not do this.
func isDenied(code string) bool {
	switch code {
	case "AccessDenied", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch",
		"AllAccessDisabled", "AccountProblem", "InvalidSecurity", "InvalidToken",
		"InvalidClientTokenId", "UnrecognizedClientException",
		"XAdminUserNotFound": // versitygw: unknown access key, with status 404
		return true
	}
	return false
}

// isWrongRegion reports codes meaning the request went to the wrong region.
func isWrongRegion(code string) bool {
	switch code {
	case "PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException":
		return true
	}
	return false
}

// isInvalidRequest reports 4xx codes for requests that will fail the same
// way every time. Codes that can be transient (RequestTimeout, BadDigest,
// IncompleteBody, ExpiredToken, SlowDown, …) are not among them.
func isInvalidRequest(code string) bool {
	switch code {
	case "InvalidArgument", "InvalidRequest", "InvalidBucketName", "InvalidBucketState",
		"InvalidObjectState", "KeyTooLongError", "EntityTooLarge", "MalformedXML",
		"MissingContentLength", "InvalidDigest", "InvalidRetentionPeriod",
		"ObjectLockConfigurationNotFoundError", "InvalidStorageClass", "MethodNotAllowed":
		return true
	}
	return false
}
