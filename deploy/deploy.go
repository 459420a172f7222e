// Package deploy holds blockmover's Kubernetes manifests, embedded for
// control planes that install them: RBAC for the orchestrator and the mover
// pods (rbac.yaml, volume-mode-change.yaml), example export and import Jobs,
// the Velero data mover controller with its RBAC (controller.yaml),
// and the Dockerfile of the image (which `make image` builds without a
// container engine, see hack/build-image.sh). docs/kubernetes.md explains
// them; the csi tests apply RBAC to a real apiserver through this package.
//
// Each function returns a fresh copy: the caller may modify it.
package deploy

import (
	"bytes"
	_ "embed"
)

var (
	//go:embed rbac.yaml
	rbac []byte
	//go:embed volume-mode-change.yaml
	volumeModeChange []byte
	//go:embed export-job.yaml
	exportJob []byte
	//go:embed import-job.yaml
	importJob []byte
	//go:embed controller.yaml
	controller []byte
)

// RBAC is rbac.yaml: ServiceAccounts, roles and bindings in the namespace
// "blockmover".
func RBAC() []byte { return bytes.Clone(rbac) }

// VolumeModeChange is volume-mode-change.yaml: the optional binding that
// lets the orchestrator handle Filesystem-mode volumes at block level.
func VolumeModeChange() []byte { return bytes.Clone(volumeModeChange) }

// ExportJob is export-job.yaml, the example export Job.
func ExportJob() []byte { return bytes.Clone(exportJob) }

// ImportJob is import-job.yaml, the example import Job.
func ImportJob() []byte { return bytes.Clone(importJob) }

// Controller is controller.yaml: `mover controller` serving Velero in the
// namespace "velero", its ServiceAccounts and least-privilege RBAC.
func Controller() []byte { return bytes.Clone(controller) }
