// Package csi holds the Kubernetes and CSI side of blockmover: the
// orchestration a control plane runs (Clients.Export: VolumeSnapshot of a
// PVC → a volumeMode: Block clone → a mover Job that sees the clone as a
// device → the Job's result → cleanup; Clients.Import the reverse), and the
// changed-block tracking source backed by the Kubernetes SnapshotMetadata
// service (SnapshotMetadata, a changes.ExtentSource).
//
// # Contract
//
//   - Kubernetes stays here (and in cmd): the library packages chunk, repo,
//     changes and mover import no k8s.io package. csi depends on changes,
//     never the other way round, and not on mover: the pipelines run in the
//     mover Jobs it creates.
//   - Operations are idempotent and resumable: every object an operation
//     creates is named from its operation ID and labelled
//     blockmover.io/operation, so a control plane that crashes and runs the
//     same operation again adopts what exists, and Cleanup deletes it all.
//   - Clients are safe for concurrent use; each operation's arguments are
//     validated up front (errors wrap ErrInvalidArgs).
//
// docs/kubernetes.md explains the manifests, the permissions and the
// failure handling.
package csi
