package velero

import (
	"errors"
	"strings"
	"testing"

	"github.com/blockmover/blockmover/csi"
	velerov1 "github.com/vmware-tanzu/velero/pkg/apis/velero/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const iniCreds = `# velero's cloud file
[default]
aws_access_key_id = AKIDEFAULT
aws_secret_access_key=secretdefault

[profile backup]
aws_access_key_id = AKIBACKUP
aws_secret_access_key = secretbackup
aws_session_token = tok
`

func bsl(provider, bucket, prefix string, config map[string]string) *velerov1.BackupStorageLocation {
	return &velerov1.BackupStorageLocation{
		ObjectMeta: metav1.ObjectMeta{Namespace: "velero", Name: "default"},
		Spec: velerov1.BackupStorageLocationSpec{Provider: provider, Config: config,
			StorageType: velerov1.StorageType{ObjectStorage: &velerov1.ObjectStorageLocation{Bucket: bucket, Prefix: prefix}}},
	}
}

// TestRepositoryFor: a BackupStorageLocation as `velero install` writes
// it becomes the mover's repository URL, S3 settings and credentials.
func TestRepositoryFor(t *testing.T) {
	loc := bsl("aws", "backups", "/cluster-a/", map[string]string{"region": "minio", "s3Url": "http://minio.velero:9000",
		"s3ForcePathStyle": "true", "profile": "backup"})
	r, err := RepositoryFor(loc, []byte(iniCreds))
	if err != nil {
		t.Fatal(err)
	}
	if r.URL != "s3://backups/cluster-a/plugins/blockmover" {
		t.Errorf("URL %q", r.URL)
	}
	want := map[string]string{"AWS_REGION": "minio", "AWS_ENDPOINT_URL": "http://minio.velero:9000",
		"AWS_ACCESS_KEY_ID": "AKIBACKUP", "AWS_SECRET_ACCESS_KEY": "secretbackup", "AWS_SESSION_TOKEN": "tok"}
	for k, v := range want {
		if r.Env[k] != v {
			t.Errorf("Env[%s] = %q, want %q", k, r.Env[k], v)
		}
	}
	if len(r.Env) != len(want) || len(r.Args) != 1 || r.Args[0] != "--s3-path-style" {
		t.Errorf("Env %v Args %v", r.Env, r.Args)
	}

	// The location's CA bundle goes with it.
	loc.Spec.ObjectStorage.CACert = []byte("PEM")
	if r, err := RepositoryFor(loc, nil); err != nil || string(r.CACert) != "PEM" {
		t.Errorf("caCert: %+v %v", r, err)
	}

	// No prefix, default profile, no path style, no credentials.
	r, err = RepositoryFor(bsl("velero.io/aws", "b", "", nil), nil)
	if err != nil || r.URL != "s3://b/plugins/blockmover" || len(r.Env) != 0 || len(r.Args) != 0 {
		t.Errorf("bare location: %+v %v", r, err)
	}
	r, err = RepositoryFor(bsl("aws", "b", "", nil), []byte(iniCreds))
	if err != nil || r.Env["AWS_ACCESS_KEY_ID"] != "AKIDEFAULT" || r.Env["AWS_SESSION_TOKEN"] != "" {
		t.Errorf("default profile: %+v %v", r, err)
	}
	if ref, key := CredentialRef(loc); ref != DefaultCredentialSecret || key != DefaultCredentialKey {
		t.Errorf("CredentialRef %s %s", ref, key)
	}
	loc.Spec.Credential = &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "bsl-creds"}, Key: "aws"}
	if ref, key := CredentialRef(loc); ref != "bsl-creds" || key != "aws" {
		t.Errorf("CredentialRef %s %s", ref, key)
	}
}

func TestRepositoryForRefuses(t *testing.T) {
	for name, tc := range map[string]struct {
		loc   *velerov1.BackupStorageLocation
		creds string
		want  string
	}{
		"gcp":       {bsl("gcp", "b", "", nil), "", `provider "gcp"`},
		"no bucket": {bsl("aws", "", "", nil), "", "no objectStorage.bucket"},
		"insecure":  {bsl("aws", "b", "", map[string]string{"insecureSkipTLSVerify": "true"}), "", "insecureSkipTLSVerify"},
		"profile":   {bsl("aws", "b", "", map[string]string{"profile": "nope"}), iniCreds, "no [nope] profile"},
		"no secret": {bsl("aws", "b", "", nil), "[default]\naws_access_key_id = A\n", "lacks aws_access_key_id or aws_secret_access_key"},
		"garbage":   {bsl("aws", "b", "", nil), "[default\n", "section header"},
	} {
		t.Run(name, func(t *testing.T) {
			var creds []byte
			if tc.creds != "" {
				creds = []byte(tc.creds)
			}
			_, err := RepositoryFor(tc.loc, creds)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want one with %q", err, tc.want)
			}
		})
	}
}

// TestExplainWrongPassword: the mover's termination message of a wrong
// password becomes a status.message naming the Secret to fix.
func TestExplainWrongPassword(t *testing.T) {
	res, err := csi.ParseResult(`{"error":"wrong password or no key file matches","reason":"WrongPassword","exit_code":12}`)
	if err != nil {
		t.Fatal(err)
	}
	c := &Controller{cfg: Config{Namespace: "velero", PasswordSecret: "blockmover-password"}}
	jf := &csi.JobFailedError{Namespace: "velero", Job: "mover-du-x", Message: res.Error, MoverReason: res.Reason, ExitCode: res.ExitCode}
	got := oneLine(c.explain(jf, "default", &Repository{URL: "s3://b/blockmover"}))
	want := "the password in Secret velero/blockmover-password (key MOVER_PASSWORD) does not open repository s3://b/blockmover of BackupStorageLocation default: wrong password or no key file matches"
	if got != want {
		t.Errorf("message\n%s\nwant\n%s", got, want)
	}
	other := errors.New("PVC shop/db: not\nbound")
	if got := oneLine(c.explain(other, "default", nil)); got != "PVC shop/db: not bound" {
		t.Errorf("other error: %q", got)
	}
}
