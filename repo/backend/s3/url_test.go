package s3

import (
	"fmt"
	"strings"
	"testing"
)

func TestParseURL(t *testing.T) {
	for _, tc := range []struct {
		url, bucket, prefix string
	}{
		{"s3://bucket", "bucket", ""},
		{"s3://bucket/", "bucket", ""},
		{"s3://bucket/prefix", "bucket", "prefix"},
		{"s3://bucket/prefix/path/", "bucket", "prefix/path"},
		{"S3://my.bucket-1/a/b/c", "my.bucket-1", "a/b/c"},
		{"s3://Legacy_Bucket/x", "Legacy_Bucket", "x"},
		{"s3://bucket/with space/ünï", "bucket", "with space/ünï"},
	} {
		bucket, prefix, err := ParseURL(tc.url)
		if err != nil || bucket != tc.bucket || prefix != tc.prefix {
			t.Errorf("ParseURL(%q) = %q, %q, %v; want %q, %q", tc.url, bucket, prefix, err, tc.bucket, tc.prefix)
		}
	}
	for _, tc := range []struct {
		url, wantMsg string
	}{
		{"", "must start with s3://"},
		{"bucket/prefix", "must start with s3://"},
		{"s3:bucket/prefix", "must start with s3://"},
		{"https://bucket/prefix", "must start with s3://"},
		{"s3://", "no bucket"},
		{"s3:///prefix", "no bucket"},
		{"s3://bucket//x", "empty path segment"},
		{"s3://bucket/a/../b", `".." path segment`},
		{"s3://bucket/./b", `"." path segment`},
		{"s3://host:9000/bucket", "not a bucket name"},
		{"s3://user@bucket/x", "not a bucket name"},
		{"s3://bucket/x?versionId=1", "query and fragment"},
		{"s3://bucket/x#frag", "query and fragment"},
		{"s3://ab/x", "3 to 255 characters"},
		{"s3://" + strings.Repeat("b", 256), "3 to 255 characters"},
		{"s3://bu*ket/x", "not allowed"},
		{"s3://-bucket/x", "start and end with a letter or digit"},
		{"s3://bucket./x", "start and end with a letter or digit"},
		{"s3://bucket/a\x00b", "control character"},
		{"s3://bucket/\xff", "UTF-8"},
	} {
		bucket, prefix, err := ParseURL(tc.url)
		if err == nil {
			t.Errorf("ParseURL(%q) = %q, %q; want an error", tc.url, bucket, prefix)
			continue
		}
		if !strings.Contains(err.Error(), tc.wantMsg) || !strings.Contains(err.Error(), fmt.Sprintf("%q", tc.url)) {
			t.Errorf("ParseURL(%q): error %q does not quote the URL and say %q", tc.url, err, tc.wantMsg)
		}
	}
}

func ExampleParseURL() {
	bucket, prefix, err := ParseURL("s3://backups/cluster-a/volumes")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("bucket %q, prefix %q\n", bucket, prefix)

	_, _, err = ParseURL("s3://minio.local:9000/backups")
	fmt.Println(err)
	// Output:
	// bucket "backups", prefix "cluster-a/volumes"
	// s3 URL "s3://minio.local:9000/backups": "minio.local:9000" is not a bucket name; give the endpoint separately (Endpoint option or AWS_ENDPOINT_URL), as in s3://bucket/prefix
}
