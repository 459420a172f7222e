// Package repo is blockmover's repository: an encrypted, deduplicating
// store of chunks, manifest pages and snapshots on a backend.Backend. The
// format, byte for byte, is in FORMAT.md beside this file.
//
// # Contract
//
//   - Nothing stored is ever rewritten in place: every object is created
//     once (create-only puts) under a random or content-derived name, and
//     only gc, forget and the repairs delete. So many writers (exports in
//     several Jobs) share one repository without a lock.
//   - Crash anywhere, lose nothing. An export writes packs, then index
//     files, then its snapshot: a snapshot that exists is complete. gc,
//     forget, repair index and repair snapshots keep the repository valid
//     after every single write or delete they make (FORMAT.md states the
//     invariants and the order of writes), and the next run finishes the
//     work. They hold the maintenance lease (AcquireLease), one at a
//     time; a lease whose holder was killed is taken over without a person.
//   - Damage stays local. Every object is authenticated; a damaged index
//     file is skipped with a warning (Repository.Warnings), a damaged
//     snapshot fails alone, and readers keep only index entries of packs
//     that exist. Repairs only add knowledge: they never drop an index
//     entry they cannot replace with a better one.
//   - Every time that decides a deletion is the backend's (object ModTimes),
//     never a local clock.
//
// # Concurrency and memory
//
// A Repository's methods are safe for concurrent use unless their comment
// says otherwise; Packer, Hasher and BlobOpener are per-goroutine. The
// in-memory index costs about 48 bytes per blob (FORMAT.md, "Index
// memory"); gc adds one bit per blob. Buffers passed to Put-like calls are
// not retained; a saved pack's buffer is returned with ReleasePack.
// Listing snapshots (ReadSummaries), retention (ApplyPolicy) and "latest"
// read each snapshot's summary, a few hundred bytes, not its page list
// (FORMAT.md, "Snapshot summaries"); only the snapshots imported,
// exported against, checked or marked by gc are read in full.
// Readers load chunks with LoadBlobs, a run of one pack per ranged read,
// into buffers held by the caller's BlobOpener; a plaintext is valid until
// the callback it is handed to returns (LoadBlobsInto decodes into the
// caller's buffers instead, and hands each plaintext over). Only this package knows a pack's
// layout.
package repo
