package velero

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"

	velerov1 "github.com/vmware-tanzu/velero/pkg/apis/velero/v1"
)

// RepositoryPrefix is added to a BackupStorageLocation's prefix: the
// repository lives beside Velero's own files, never among them, under the
// top-level directory Velero keeps for plugins. (Velero marks a location
// Unavailable, and then neither backs up to it nor deletes from it, when
// its prefix holds a top-level directory other than backups, restores,
// restic, kopia, metadata and plugins.)
const RepositoryPrefix = "plugins/blockmover"

// Defaults of Velero's AWS plugin for the credentials.
const (
	DefaultCredentialSecret = "cloud-credentials"
	DefaultCredentialKey    = "cloud"
	DefaultProfile          = "default"
)

// ErrUnsupportedLocation is wrapped when a BackupStorageLocation cannot
// hold a blockmover repository.
var ErrUnsupportedLocation = errors.New("unsupported BackupStorageLocation")

// Repository is how the mover Jobs reach the repository of one
// BackupStorageLocation.
type Repository struct {
	// URL is the mover's MOVER_REPOSITORY: s3://BUCKET/PREFIX/plugins/blockmover.
	URL string
	// Env holds the mover's S3 settings and credentials (AWS_REGION,
	// AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
	// AWS_SESSION_TOKEN), each only when set.
	Env map[string]string
	// Args are mover flags the location needs (--s3-path-style).
	Args []string
	// CACert is the PEM bundle to trust for the endpoint: the location's
	// objectStorage.caCert (RepositoryFor), or the Secret key its
	// caCertRef names (which the caller reads).
	CACert []byte
}

// CredentialRef returns the Secret key that holds bsl's credentials:
// spec.credential, or else Velero's cloud-credentials Secret, key cloud.
func CredentialRef(bsl *velerov1.BackupStorageLocation) (secret, key string) {
	if c := bsl.Spec.Credential; c != nil && c.Name != "" {
		return c.Name, c.Key
	}
	return DefaultCredentialSecret, DefaultCredentialKey
}

// RepositoryFor derives the repository of bsl. credentials is the content
// of the Secret key that CredentialRef names, in the AWS shared
// credentials (INI) format Velero's AWS plugin reads; nil means none (the
// pod's own identity, e.g. IRSA). It fails, wrapping
// ErrUnsupportedLocation, for anything but the aws provider with a bucket,
// and for insecureSkipTLSVerify, which the mover does not offer.
func RepositoryFor(bsl *velerov1.BackupStorageLocation, credentials []byte) (*Repository, error) {
	name := bsl.Namespace + "/" + bsl.Name
	switch bsl.Spec.Provider {
	case "aws", "velero.io/aws":
	default:
		return nil, fmt.Errorf("%w: BackupStorageLocation %s has provider %q; blockmover stores only in aws (S3 or S3-compatible) locations", ErrUnsupportedLocation, name, bsl.Spec.Provider)
	}
	store := bsl.Spec.ObjectStorage
	if store == nil || store.Bucket == "" {
		return nil, fmt.Errorf("%w: BackupStorageLocation %s has no objectStorage.bucket", ErrUnsupportedLocation, name)
	}
	cfg := bsl.Spec.Config
	if v, _ := strconv.ParseBool(cfg["insecureSkipTLSVerify"]); v {
		return nil, fmt.Errorf("%w: BackupStorageLocation %s sets insecureSkipTLSVerify, which blockmover refuses: give the location its CA in objectStorage.caCert or caCertRef", ErrUnsupportedLocation, name)
	}
	path := strings.Trim(store.Prefix, "/")
	if path != "" {
		path += "/"
	}
	r := &Repository{URL: "s3://" + store.Bucket + "/" + path + RepositoryPrefix, Env: map[string]string{}, CACert: store.CACert}
	if v := cfg["region"]; v != "" {
		r.Env["AWS_REGION"] = v
	}
	if v := cfg["s3Url"]; v != "" {
		r.Env["AWS_ENDPOINT_URL"] = v
	}
	if v, _ := strconv.ParseBool(cfg["s3ForcePathStyle"]); v {
		r.Args = append(r.Args, "--s3-path-style")
	}
	if credentials != nil {
		profile := cfg["profile"]
		if profile == "" {
			profile = DefaultProfile
		}
		creds, err := ParseAWSCredentials(credentials, profile)
		if err != nil {
			return nil, fmt.Errorf("credentials of BackupStorageLocation %s: %w", name, err)
		}
		for k, v := range creds {
			r.Env[k] = v
		}
	}
	return r, nil
}

// ParseAWSCredentials reads profile from an AWS shared credentials file
// (INI: [profile] sections of key = value lines, # and ; comments) and
// returns its keys as environment variables: AWS_ACCESS_KEY_ID,
// AWS_SECRET_ACCESS_KEY and, if present, AWS_SESSION_TOKEN. A profile
// without both keys is an error that names what is missing.
func ParseAWSCredentials(ini []byte, profile string) (map[string]string, error) {
	keys := map[string]string{
		"aws_access_key_id":     "AWS_ACCESS_KEY_ID",
		"aws_secret_access_key": "AWS_SECRET_ACCESS_KEY",
		"aws_session_token":     "AWS_SESSION_TOKEN",
	}
	out := map[string]string{}
	section, found := "", false
	sc := bufio.NewScanner(bytes.NewReader(ini))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
			continue
		case line[0] == '[':
			if !strings.HasSuffix(line, "]") {
				return nil, fmt.Errorf("line %d: section header without ']'", n)
			}
			section = strings.TrimSpace(strings.TrimPrefix(line[1:len(line)-1], "profile "))
			found = found || section == profile
			continue
		}
		if section != profile {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("line %d: want key = value", n)
		}
		if env, ok := keys[strings.ToLower(strings.TrimSpace(k))]; ok {
			out[env] = strings.TrimSpace(v)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	switch {
	case !found:
		return nil, fmt.Errorf("no [%s] profile in the AWS credentials file", profile)
	case out["AWS_ACCESS_KEY_ID"] == "" || out["AWS_SECRET_ACCESS_KEY"] == "":
		return nil, fmt.Errorf("profile [%s] lacks aws_access_key_id or aws_secret_access_key", profile)
	}
	return out, nil
}
