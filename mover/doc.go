// Package mover moves volumes between block devices and a repository: Export
// cuts, hashes, compresses, encrypts and uploads a volume as a snapshot;
// Import writes a snapshot back. Both are pipelines of stages joined by
// bounded channels, with memory bounded by their options, never by the
// volume's size.
//
// # Contract
//
//   - Export and Import take the repository by role (store.go): ExportRepo
//     and ImportRepo are built from small interfaces that
//     *repo.Repository satisfies; a chunk's bytes flow only forward, from
//     Source.ReadAt to the packer, and from repo.LoadBlobsInto through
//     the writers to Target.WriteAt.
//   - Sources are io.ReaderAt (parallel reads, buffers not retained);
//     targets are io.WriterAt on ranges that never overlap.
//   - An incremental export with a change list yields exactly the chunk
//     list a full export of the same bytes would; a nil change list means
//     none, an empty one means nothing changed (package changes).
//   - A failed or cancelled export indexes the packs it uploaded before it
//     returns, so its rerun reuses them; the repository stays valid at any
//     point of a crash.
//   - Exports and imports in several processes (each with its own
//     Repository) may share one repository at once, beside gc.
//
// # Scheduling
//
// Their CPU workers default to GOMAXPROCS, and they never change
// GOMAXPROCS: it is the process's. A program that runs an export or an
// import as its main work does well to give the Go scheduler one P more
// than the workers it asks for (the mover command does, for as long as
// the data path runs): the goroutines that wait in system calls (the
// import's writer in its O_DIRECT writes, the export's reader and
// uploaders) otherwise find both Ps held by workers that never pause, and
// wait up to 10 ms for one to be preempted while the storage stands idle
// (a 4 GiB restore onto an ext4 disk: 2.9–3.3 s on 2 CPUs, 2.35–2.7 s
// with the spare P; BENCHMARKS.md).
package mover
