// Package changes holds change lists: the byte ranges of a volume that may
// differ from a base snapshot, which an incremental export reads instead of
// the whole volume.
//
// # What a change list is
//
// An Extent is a byte range [Offset, Offset+Length). A ChangeList is a
// slice of extents for a device of a known size that is
//
//   - inside the device: every extent has a positive length and lies
//     within [0, size);
//   - sorted by offset;
//   - merged: no two extents overlap or touch (there is a gap of at least
//     one byte between neighbours), so each byte is covered at most once
//     and a range that is covered lies within a single extent.
//
// NewChangeList builds one from extents in any order (validated, sorted,
// merged); Validate checks one built by hand. Every other method (Search,
// Overlaps, Contains, Clip, Union, Bytes) assumes a well-formed receiver,
// never modifies it, and returns well-formed lists. Extents outside the
// device are errors wrapping ErrInvalidExtent, never clipped silently.
//
// # Nil and empty
//
// A nil ChangeList means that there is no change list: nothing is known of
// what changed, and an incremental export must read the whole volume
// (mover.ExportOptions.Changes). An empty ChangeList that is not nil
// means that nothing changed: the export reads nothing but the chunks it is
// asked to verify. Most volumes are idle most nights, so the difference is
// a full read of the volume. Every function and method of this package that
// returns a ChangeList without an error returns a non-nil one (ParseChanges
// of a file that lists no extent, CollectChanges of a source that sends
// none, NewChangeList, Diff of equal devices, Clip, Union): a change list
// that exists never turns into none. Test for "nothing changed" with
// len(cl) == 0 && cl != nil, never with cl == nil.
//
// A change list may cover more than what changed (CBT works in blocks,
// Diff in comparison blocks); it must never miss a changed byte.
//
// # Where change lists come from
//
//   - Files that a control plane hands over: ParseChanges reads the
//     Kubernetes SnapshotMetadata shape (snapshotmetadata.go), `rbd diff
//     --format json` (rbd.go) and `aws ebs list-changed-blocks` (ebs.go),
//     detecting the format from the document's shape if not told. Errors
//     about the file wrap ErrChangeList and name the entry; an error of the
//     reader is passed on wrapped, but not as ErrChangeList.
//   - Changed-block tracking services: an ExtentSource streams extents;
//     CollectChanges gathers one into a ChangeList. Package csi implements
//     it over the Kubernetes SnapshotMetadata gRPC service. A ChangeList is
//     itself an ExtentSource.
//   - A comparison of two devices: Diff, for storage without CBT.
//
// # Memory
//
// Parsers stream: the document is read through a 64 KiB buffer and decoded
// one JSON value at a time (tokenizer in json.go), no value may exceed
// 1 MiB, and extents that touch or overlap are merged as they arrive. So
// memory grows with the number of separate extents (16 bytes each), never
// with the file's size; a list too fragmented to hold (of the order of
// 2^25 separate extents, 512 MiB) is refused rather than risking a Job's
// memory limit. Diff holds two read
// buffers per worker, bounded by DiffOptions.
//
// # Concurrency
//
// A ChangeList is a plain slice: any number of goroutines may read it at
// once; whoever changes one needs their own copy. ParseChanges,
// CollectChanges, NewChangeList and Diff keep no shared state and may run
// concurrently. Diff calls ReadAt on its volumes from several goroutines
// at once (the io.ReaderAt contract).
//
// # Dependencies
//
// This package imports nothing else of blockmover and nothing of
// Kubernetes (imports_test.go checks it): mover (the pipelines) and csi
// (the Kubernetes side) import it, and a backup tool can use it alone.
package changes
