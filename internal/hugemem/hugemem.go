// Package hugemem allocates large, long-lived buffers outside the Go heap,
// each in an anonymous mapping of its own that is aligned to 2 MiB and
// advised for transparent huge pages (MADV_HUGEPAGE).
//
// Why (issue 15): the import decodes every chunk into a few buffers that
// it reuses, and writes them to the target from there, around the page
// cache (O_DIRECT) onto a disk or copied into tmpfs. On the project's
// paravirtualised guest, buffers of 4 KiB pages made the direct writes
// slow: a direct write's pages go to the device as up to 254 segments per request
// (max_segments of its virtio disk), so a 2 MiB write took several
// requests, each pinned page by page. Replayed on that guest, the
// import's 2,000 direct writes took 1.45–1.74 s from 4 KiB pages and
// 0.58–0.69 s from huge pages; the import onto the disk went from a
// median of 4.0 s to 3.4 s (four pairs, BENCHMARKS.md, session 18). The
// import reads its pack ranges into them too: copied into fresh memory of
// the Go heap, a 16 MiB range faulted 4,096 times (median 3.86 -> 3.48 s,
// session 20).
//
// The Go heap cannot promise huge pages: it zeroes reused memory page by
// page before the advice could apply. A mapping of its own can, at the
// price of manual lifetime: a buffer must be freed exactly once, after
// every use of it and of every slice of it (a use after Free faults, or
// worse reads another mapping). Keep it to buffers with one owner and a
// clear end. Where the kernel has no transparent huge pages, the buffers
// are ordinary pages and everything else holds.
package hugemem

// PageSize is the size of a huge page, to which every buffer's address
// and capacity are aligned.
const PageSize = 2 << 20

// roundUp rounds n up to a multiple of PageSize.
func roundUp(n int) int { return (n + PageSize - 1) &^ (PageSize - 1) }
