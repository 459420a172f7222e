package velero

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"

	"github.com/blockmover/blockmover/csi"
	velerov1 "github.com/vmware-tanzu/velero/pkg/apis/velero/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// RepositorySecretName is the Secret the controller writes in Velero's
// namespace for the mover Jobs of one BackupStorageLocation: the
// repository password, URL and S3 settings and credentials as
// environment variables.
func RepositorySecretName(bsl string) string { return "blockmover-repo-" + bsl }

// caBundleKey holds the location's CA bundle in the Job Secret.
const caBundleKey = "s3-ca.pem"

// repository derives the repository of the BackupStorageLocation named
// bsl, writes its Job Secret and returns the Job options that use it.
// Each failure says which object to fix.
func (c *Controller) repository(ctx context.Context, bsl string) (*Repository, csi.JobOptions, error) {
	ns := c.cfg.Namespace
	var job csi.JobOptions
	if bsl == "" {
		return nil, job, fmt.Errorf("no spec.backupStorageLocation")
	}
	loc, err := getObject[velerov1.BackupStorageLocation](ctx, c.dyn, bslGVR(), ns, bsl)
	if apierrors.IsNotFound(err) {
		return nil, job, fmt.Errorf("BackupStorageLocation %s not found in namespace %s: create it (velero backup-location create) or back up to an existing one", bsl, ns)
	}
	if err != nil {
		return nil, job, fmt.Errorf("BackupStorageLocation %s/%s: %w", ns, bsl, err)
	}
	secrets := c.clients.Kube.CoreV1().Secrets(ns)
	credName, credKey := CredentialRef(loc)
	var creds []byte
	s, err := secrets.Get(ctx, credName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err) && loc.Spec.Credential == nil:
		// No credentials: the pods' own identity (IRSA and the like).
	case err != nil:
		return nil, job, fmt.Errorf("credentials Secret %s/%s of BackupStorageLocation %s: %w", ns, credName, bsl, err)
	default:
		var ok bool
		if creds, ok = s.Data[credKey]; !ok {
			return nil, job, fmt.Errorf("credentials Secret %s/%s of BackupStorageLocation %s has no key %q", ns, credName, bsl, credKey)
		}
	}
	repo, err := RepositoryFor(loc, creds)
	if err != nil {
		return nil, job, err
	}
	if ref := loc.Spec.ObjectStorage.CACertRef; ref != nil && len(repo.CACert) == 0 {
		s, err := secrets.Get(ctx, ref.Name, metav1.GetOptions{})
		if err != nil {
			return nil, job, fmt.Errorf("caCertRef Secret %s/%s of BackupStorageLocation %s: %w", ns, ref.Name, bsl, err)
		}
		if repo.CACert = s.Data[ref.Key]; len(repo.CACert) == 0 {
			return nil, job, fmt.Errorf("caCertRef Secret %s/%s of BackupStorageLocation %s has no key %q", ns, ref.Name, bsl, ref.Key)
		}
	}
	pw, err := secrets.Get(ctx, c.cfg.PasswordSecret, metav1.GetOptions{})
	if err != nil {
		return nil, job, fmt.Errorf("repository password Secret %s/%s (the controller's --password-secret): %w", ns, c.cfg.PasswordSecret, err)
	}
	if len(pw.Data[csi.SecretKeyPassword]) == 0 {
		return nil, job, fmt.Errorf("repository password Secret %s/%s has no key %s", ns, c.cfg.PasswordSecret, csi.SecretKeyPassword)
	}
	data := map[string][]byte{csi.SecretKeyPassword: pw.Data[csi.SecretKeyPassword], csi.SecretKeyRepository: []byte(repo.URL)}
	for k, v := range repo.Env {
		data[k] = []byte(v)
	}
	if len(repo.CACert) > 0 {
		data[caBundleKey] = repo.CACert
	}
	name := RepositorySecretName(bsl)
	if err := c.writeSecret(ctx, name, data); err != nil {
		return nil, job, err
	}
	job = csi.JobOptions{Image: c.cfg.Image, Secret: name, ServiceAccount: c.cfg.ServiceAccount,
		Args: repo.Args, MetricsPort: c.cfg.MetricsPort,
		Labels: map[string]string{"app.kubernetes.io/part-of": "velero"}}
	if len(repo.CACert) > 0 {
		job.CABundleKey = caBundleKey
	}
	return repo, job, nil
}

// writeSecret creates or updates the controller's Secret name in its
// namespace.
func (c *Controller) writeSecret(ctx context.Context, name string, data map[string][]byte) error {
	secrets := c.clients.Kube.CoreV1().Secrets(c.cfg.Namespace)
	want := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: c.cfg.Namespace,
		Labels: map[string]string{csi.LabelManagedBy: csi.ManagedBy}}, Data: data}
	old, err := secrets.Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		if _, err := secrets.Create(ctx, want, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating Secret %s/%s: %w", c.cfg.Namespace, name, err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("reading Secret %s/%s: %w", c.cfg.Namespace, name, err)
	case old.Labels[csi.LabelManagedBy] != csi.ManagedBy:
		return fmt.Errorf("the Secret %s/%s exists and is not blockmover's (no label %s=%s); rename or delete it", c.cfg.Namespace, name, csi.LabelManagedBy, csi.ManagedBy)
	case maps.EqualFunc(old.Data, data, func(a, b []byte) bool { return string(a) == string(b) }):
		return nil
	}
	old.Data = data
	if _, err := secrets.Update(ctx, old, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("updating Secret %s/%s: %w", c.cfg.Namespace, name, err)
	}
	return nil
}

// initRepository creates the repository with a `mover init` Job named
// after the repository URL, so that concurrent first backups share one
// Job (and a lost race, exit code 3, is success).
func (c *Controller) initRepository(ctx context.Context, repo *Repository, job csi.JobOptions) error {
	sum := sha256.Sum256([]byte(repo.URL))
	created, err := c.clients.InitRepository(ctx, csi.InitArgs{Namespace: c.cfg.Namespace, Operation: "init-" + hex.EncodeToString(sum[:8]),
		Job: job, Timing: c.cfg.Timing, Log: c.cfg.Log})
	if err != nil {
		return fmt.Errorf("initialising repository %s: %w", repo.URL, err)
	}
	c.cfg.Log.Info("repository ready", "repository", repo.URL, "created", created)
	return nil
}

// deleteJob deletes the (failed) Job of op and waits until it is gone, so
// that the operation can run it again.
func (c *Controller) deleteJob(ctx context.Context, op string) error {
	jobs := c.clients.Kube.BatchV1().Jobs(c.cfg.Namespace)
	bg := metav1.DeletePropagationBackground
	name := csi.ObjectName(op)
	if err := jobs.Delete(ctx, name, metav1.DeleteOptions{PropagationPolicy: &bg}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting the failed Job %s/%s: %w", c.cfg.Namespace, name, err)
	}
	return c.wait(ctx, c.cfg.Timing, "Job "+c.cfg.Namespace+"/"+name+" deleted", func() (bool, error) {
		_, err := jobs.Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		return false, err
	})
}
