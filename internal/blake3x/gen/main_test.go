package main

import (
	"bytes"
	"os"
	"testing"
)

// TestGenerated fails when hash16_amd64.s is not what the generator
// prints: run go generate in internal/blake3x.
func TestGenerated(t *testing.T) {
	have, err := os.ReadFile("../hash16_amd64.s")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(have, generate()) {
		t.Fatal("hash16_amd64.s is stale: run go generate ./internal/blake3x")
	}
}
