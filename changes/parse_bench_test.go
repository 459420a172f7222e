package changes_test

import (
	"bytes"
	"strconv"
	"testing"

	"github.com/blockmover/blockmover/changes"
)

// BenchmarkParseChanges parses a list of 100,000 entries of each format,
// every other 4 KiB page changed, so nothing merges: the tokenizer's and
// the parsers' cost per entry, and what they allocate.
func BenchmarkParseChanges(b *testing.B) {
	const n = 100_000
	const size = n * 8192
	docs := map[string][]byte{}
	var sm, rbd, ebs []byte
	sm = append(sm, `{"block_metadata_type":"VARIABLE_LENGTH","volume_capacity_bytes":`...)
	sm = strconv.AppendInt(sm, size, 10)
	sm = append(sm, `,"block_metadata":[`...)
	rbd = append(rbd, '[')
	ebs = append(ebs, `{"ChangedBlocks":[`...)
	for i := range n {
		if i > 0 {
			sm, rbd, ebs = append(sm, ','), append(rbd, ','), append(ebs, ',')
		}
		sm = append(sm, `{"byte_offset":`...)
		sm = strconv.AppendInt(sm, int64(i)*8192, 10)
		sm = append(sm, `,"size_bytes":4096}`...)
		rbd = append(rbd, `{"offset":`...)
		rbd = strconv.AppendInt(rbd, int64(i)*8192, 10)
		rbd = append(rbd, `,"length":4096,"exists":"true"}`...)
		ebs = append(ebs, `{"BlockIndex":`...)
		ebs = strconv.AppendInt(ebs, int64(i)*2, 10)
		ebs = append(ebs, `,"FirstBlockToken":"AAUBAT4xEb5zpLqUNsdlyTF4HSFhP6+ImWnwkB3ZY9a1AP8vEeQrS4ZN8BVc"}`...)
	}
	docs[changes.FormatSnapshotMetadata] = append(sm, "]}"...)
	docs[changes.FormatRBD] = append(rbd, ']')
	docs[changes.FormatEBS] = append(ebs, `],"BlockSize":4096}`...)
	for _, format := range []string{changes.FormatSnapshotMetadata, changes.FormatRBD, changes.FormatEBS} {
		doc := docs[format]
		b.Run(format, func(b *testing.B) {
			b.SetBytes(int64(len(doc)))
			b.ReportAllocs()
			for b.Loop() {
				cl, err := changes.ParseChanges(bytes.NewReader(doc), "", size)
				if err != nil {
					b.Fatal(err)
				}
				if len(cl) != n {
					b.Fatalf("%d extents, want %d", len(cl), n)
				}
			}
		})
	}
}
