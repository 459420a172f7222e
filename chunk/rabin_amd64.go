//go:build amd64 && !purego

package chunk

// lanes2 is lanes2Go in assembly: the Go compiler keeps too few of the
// loop's values in registers, and the loop is a fifth of an export's CPU.
//
//go:noescape
func lanes2(t *rabinTables, q []byte, k, l int, d, e, mask uint64) (int, uint64, uint64)
