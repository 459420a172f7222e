// Package csi will hold the Kubernetes and CSI integration: VolumeSnapshot →
// block-mode clone PVC → mover Job, and changed-block tracking sources. It
// depends on mover, never the other way round. It is empty until the
// Kubernetes issue is worked on.
package csi
