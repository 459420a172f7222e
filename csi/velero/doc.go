// Package velero serves Velero as a third-party data mover: a controller
// that reconciles Velero's DataUploads and DataDownloads
// (velero.io/v2alpha1) whose spec.datamover is its name, and drives the
// export and import orchestration of package csi for them.
//
// Contract with Velero (1.18): Velero's CSI PVC action creates a
// DataUpload per PVC in Velero's namespace with a ready VolumeSnapshot of
// the PVC in the PVC's namespace; it then waits for the DataUpload to
// reach Completed, Failed or Canceled and copies status.snapshotID into
// the DataDownload of a later restore (with status.progress.totalBytes as
// spec.snapshotSize). Nothing else of the DataUpload reaches the restore,
// so the repository is derived from the BackupStorageLocation alone.
//
// What the controller does for a DataUpload, in phase order:
//   - New → Accepted: only when a slot is free (Config.Concurrency).
//   - Accepted → Prepared: the VolumeSnapshot is taken over as Velero's own
//     mover does: a pre-provisioned VolumeSnapshotContent with the same
//     snapshot handle and deletionPolicy Delete, bound to a VolumeSnapshot
//     in the controller's namespace; the original content is set to Retain
//     and the original VolumeSnapshot and content are deleted. From then
//     on the driver's snapshot belongs to the operation, and the
//     operation's cleanup deletes it.
//   - Prepared → InProgress (once the mover pod runs) → Completed: the
//     csi export (block clone of the snapshot, mover Job) with status
//     progress read from the pod's metrics; Failed carries one line a
//     Velero user can act on.
//   - spec.cancel: the operation's context ends, its Job, clone and
//     snapshot are deleted (an interrupted export leaves the repository
//     valid), and the phase becomes Canceled.
//
// A completed backup keeps its VolumeSnapshot when the driver serves
// SnapshotMetadata, so that the PVC's next backup reads only the blocks
// changed since (bases.go); Backups that Velero deletes have their
// snapshots forgotten, and each repository is collected, by maintenance
// Jobs (maintenance.go, which says why no finalizer is used).
//
// Every object of one DataUpload is named after its UID (OperationID), so a
// controller that restarts mid-operation finds and adopts the Job of the
// earlier run instead of creating a second one; leader election (a Lease)
// keeps two replicas from both acting.
package velero
