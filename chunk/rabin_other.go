//go:build !amd64 || purego

package chunk

func lanes2(t *rabinTables, q []byte, k, l int, d, e, mask uint64) (int, uint64, uint64) {
	return lanes2Go(t, q, k, l, d, e, mask)
}
