// Package deploy holds blockmover's Kubernetes manifests, embedded for
// control planes that install them: RBAC for the orchestrator and the mover
// pods (rbac.yaml, volume-mode-change.yaml), example export and import Jobs,
// and the Dockerfile of the image (which `make image` builds without a
// container engine, see hack/build-image.sh). docs/kubernetes.md explains
// them.
package deploy

import _ "embed"

// RBAC is rbac.yaml: ServiceAccounts, roles and bindings in the namespace
// "blockmover".
//
//go:embed rbac.yaml
var RBAC []byte

// VolumeModeChange is volume-mode-change.yaml: the optional binding that lets
// the orchestrator handle Filesystem-mode volumes at block level.
//
//go:embed volume-mode-change.yaml
var VolumeModeChange []byte

// ExportJob and ImportJob are the example Jobs.
//
//go:embed export-job.yaml
var ExportJob []byte

//go:embed import-job.yaml
var ImportJob []byte
