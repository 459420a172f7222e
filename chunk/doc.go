// Package chunk cuts the bytes of a volume into chunks: content-defined
// (Rabin fingerprints, github.com/restic/chunker) or fixed-size, with all-zero
// runs recognised as holes before any hashing.
//
// Everything that decides where a cut falls is in Params, which a repository
// fixes once at init. The cut points of a volume are a pure function of its
// bytes and its Params: they never depend on worker counts, buffer sizes or
// the order in which segments are processed. Three rules give every chunk
// list its shape:
//
//  1. The volume is divided into segments of Params.SegmentSize bytes; a
//     segment edge is always a cut point, so segments are cut independently
//     (in parallel) and a chunk never crosses a segment edge.
//  2. The volume is divided into zero blocks of Params.ZeroBlock bytes,
//     aligned to offset 0. A block whose bytes are all zero is a hole block;
//     a maximal run of hole blocks within a segment is one hole piece. Holes
//     are never hashed, compressed or stored.
//  3. A maximal run of non-hole blocks within a segment (a stretch) is cut by
//     the splitter: content-defined (cdc) or every FixedSize bytes of volume
//     offset (fixed). A stretch's start and end are cut points.
//
// The package knows nothing of repositories.
package chunk
