// Package testdriver is a small CSI driver for the tests of package csi and
// for the local cluster: real block devices, real snapshots and a real
// SnapshotMetadata service on one node, with nothing but files, loop
// devices and ext4. It is test support: it lives under csi/internal so no
// other module can import it, and no product package does (only tests and
// its command, cmd/blockmover-csi-testdriver). It must run as root.
//
// # Storage
//
// A volume is a sparse file, <StateDir>/volumes/<id>.img, with a JSON
// record beside it; a snapshot is a copy of that file in
// <StateDir>/snapshots, made with a reflink where the filesystem has them
// and otherwise by copying only the data extents (SEEK_DATA/SEEK_HOLE and
// copy_file_range), so holes stay holes. Before copying a volume that is in
// use the driver freezes the ext4 mounted from it (FIFREEZE) and flushes its
// loop device, so the copy is consistent. IDs are hashes of the CO's names,
// which makes every Create call idempotent; capacities are rounded up to
// 1 MiB. The state survives a restart: the kernel's list of loop devices
// (/sys/block/loop*/loop/backing_file) and /proc/self/mountinfo are the
// record of what is staged and published.
//
// # Capabilities
//
// Plugin: CONTROLLER_SERVICE, VOLUME_ACCESSIBILITY_CONSTRAINTS (one segment,
// TopologyKey = Config.NodeID, on the node and on every volume, so
// node-local provisioning is real) and SNAPSHOT_METADATA_SERVICE.
//
// Controller: CREATE_DELETE_VOLUME (empty, from a snapshot, or a clone of a
// volume), CREATE_DELETE_SNAPSHOT, LIST_SNAPSHOTS (paged) and CLONE_VOLUME;
// ValidateVolumeCapabilities. Access modes are the SINGLE_NODE_* ones;
// access types Block and Mount with ext4. No ControllerPublish, no
// ListVolumes, no GetCapacity, no expansion.
//
// Node: STAGE_UNSTAGE_VOLUME. NodeStageVolume attaches the file as a loop
// device (losetup); for a Mount volume it runs mkfs.ext4 if the device holds
// no filesystem yet and mounts it on the staging path. NodePublishVolume
// bind-mounts the loop device node onto a file at the target path (Block) or
// the staging mount onto a directory there (Mount), read-only if asked:
// a read-only Block publish gets a read-only loop device of its own, since
// a read-only bind mount does not stop writes to a device node.
// Unpublish and Unstage undo that, removing the target and detaching the
// loop device. DeleteVolume of a volume still staged fails with
// FailedPrecondition.
//
// # SnapshotMetadata
//
// The CSI SnapshotMetadata service (csi.v1.SnapshotMetadata, CSI spec 1.10
// and later) is served on the same socket as the other services, because
// that is where the external-snapshot-metadata sidecar looks for it: it
// dials its --csi-address once, reads the driver name from Identity, checks
// SNAPSHOT_METADATA_SERVICE in GetPluginCapabilities, and calls
// csi.NewSnapshotMetadataClient on that one connection. The sidecar in turn
// serves the Kubernetes API (external-snapshot-metadata pkg/api, with the
// security token, namespace and VolumeSnapshot names) that package csi
// consumes.
//
// GetMetadataAllocated reports the data extents of the snapshot file
// (SEEK_DATA/SEEK_HOLE). GetMetadataDelta reports the blocks of
// Config.BlockSize whose bytes differ between two snapshots of one volume,
// reading only the blocks that are data in either file. Both honour
// starting_offset and max_results and stream FIXED_LENGTH blocks or, with
// Config.MetadataType, VARIABLE_LENGTH extents.
//
// # Starting it
//
// In a test:
//
//	d, err := testdriver.New(testdriver.Config{StateDir: t.TempDir(), NodeID: "node-1"})
//	l, err := testdriver.Listen("unix://" + filepath.Join(dir, "csi.sock"))
//	go d.Serve(ctx, l) // until ctx ends
//
// For a cluster, the command serves the same on --endpoint:
//
//	go build -o bin/ ./csi/internal/testdriver/cmd/blockmover-csi-testdriver
//	blockmover-csi-testdriver --endpoint unix:///run/blockmover-csi/csi.sock \
//	    --state-dir /var/lib/blockmover-csi --node-id node-1
//
// The tests (root only, else skipped) run csi-sanity for Block and for
// Mount volumes, and check the SnapshotMetadata streams and the node
// calls against real files, loop devices and mounts, leaving none behind.
package testdriver
