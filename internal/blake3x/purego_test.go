//go:build purego

package blake3x

const purego = true
