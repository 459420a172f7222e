package testdriver

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"os/exec"
	"reflect"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

type extent struct{ Off, Len int64 }

func (e extent) String() string { return fmt.Sprintf("[%d KiB +%d KiB)", e.Off>>10, e.Len>>10) }

// stream is what one SnapshotMetadata call returned.
type stream struct {
	Extents  []extent
	Messages int
	MaxLen   int // entries in the longest message
	Capacity int64
	Type     csi.BlockMetadataType
}

type metadataResponse interface {
	GetBlockMetadataType() csi.BlockMetadataType
	GetVolumeCapacityBytes() int64
	GetBlockMetadata() []*csi.BlockMetadata
}

// collect reads a stream to its end, checking that the type and capacity
// never change and that the extents are strictly increasing.
func collect[R metadataResponse](t *testing.T, recv func() (R, error)) (stream, error) {
	t.Helper()
	var s stream
	for {
		r, err := recv()
		if err == io.EOF {
			return s, nil
		}
		if err != nil {
			return s, err
		}
		if s.Messages > 0 && (r.GetBlockMetadataType() != s.Type || r.GetVolumeCapacityBytes() != s.Capacity) {
			t.Errorf("message %d: type %v capacity %d after %v %d", s.Messages, r.GetBlockMetadataType(), r.GetVolumeCapacityBytes(), s.Type, s.Capacity)
		}
		s.Messages++
		s.Type, s.Capacity = r.GetBlockMetadataType(), r.GetVolumeCapacityBytes()
		s.MaxLen = max(s.MaxLen, len(r.GetBlockMetadata()))
		for _, b := range r.GetBlockMetadata() {
			e := extent{b.GetByteOffset(), b.GetSizeBytes()}
			if n := len(s.Extents); n > 0 && s.Extents[n-1].Off+s.Extents[n-1].Len > e.Off || e.Len <= 0 {
				t.Errorf("extent %v after %v", e, s.Extents[n-1])
			}
			s.Extents = append(s.Extents, e)
		}
	}
}

func allocated(t *testing.T, c clients, snap string, start int64, maxResults int32) (stream, error) {
	st, err := c.meta.GetMetadataAllocated(context.Background(), &csi.GetMetadataAllocatedRequest{
		SnapshotId: snap, StartingOffset: start, MaxResults: maxResults})
	if err != nil {
		return stream{}, err
	}
	return collect(t, st.Recv)
}

func delta(t *testing.T, c clients, base, target string, start int64, maxResults int32) (stream, error) {
	st, err := c.meta.GetMetadataDelta(context.Background(), &csi.GetMetadataDeltaRequest{
		BaseSnapshotId: base, TargetSnapshotId: target, StartingOffset: start, MaxResults: maxResults})
	if err != nil {
		return stream{}, err
	}
	return collect(t, st.Recv)
}

// blocksOf splits extents into the 64 KiB blocks they touch.
func blocksOf(es ...extent) []extent {
	var out []extent
	for _, e := range es {
		for b := e.Off / kib64 * kib64; b < e.Off+e.Len; b += kib64 {
			if n := len(out); n == 0 || out[n-1].Off < b {
				out = append(out, extent{b, kib64})
			}
		}
	}
	return out
}

const (
	kib    = int64(1 << 10)
	kib64  = 64 * kib
	mib    = int64(1 << 20)
	volLen = 16 * mib
)

// TestSnapshotMetadata writes known blocks through a published Block
// volume, snapshots it, changes some blocks (one rewritten with the same
// bytes, one discarded, new ones in a hole) and snapshots again. The
// allocated extents are what SEEK_DATA/SEEK_HOLE see in the snapshot file,
// which are exactly the ranges written; the delta is exactly the blocks
// whose bytes changed. Both metadata types, with starting_offset and
// max_results, and the error codes of the spec.
func TestSnapshotMetadata(t *testing.T) {
	needRoot(t)
	fixed := startDriver(t, Config{})
	// A second driver on the same state, streaming VARIABLE_LENGTH extents.
	variable := startDriver(t, Config{StateDir: fixed.state, MetadataType: csi.BlockMetadataType_VARIABLE_LENGTH})

	vol := createVolume(t, fixed, "pvc-cbt", volLen, blockCap, nil)
	dev := publish(t, fixed, vol.GetVolumeId(), blockCap, false)
	written := []extent{{0, kib64}, {mib + 4*kib, 8 * kib}, {5 * mib, 3 * kib64}, {10 * mib, kib64}}
	first := make(map[int64][]byte)
	for _, e := range written {
		first[e.Off] = write(t, dev, e, nil)
	}
	snap1 := createSnapshot(t, fixed, "snap-1", vol.GetVolumeId()).GetSnapshotId()

	write(t, dev, written[0], first[0])                        // the same bytes again: no change
	write(t, dev, extent{5*mib + kib64 + 8*kib, 4 * kib}, nil) // 4 KiB inside the second block of an extent
	write(t, dev, extent{12 * mib, 2 * kib64}, nil)            // new data in a hole
	if out, err := exec.Command("blkdiscard", "-o", fmt.Sprint(10*mib), "-l", fmt.Sprint(kib64), dev).CombinedOutput(); err != nil {
		t.Fatalf("blkdiscard: %v: %s", err, out) // data to hole
	}
	snap2 := createSnapshot(t, fixed, "snap-2", vol.GetVolumeId()).GetSnapshotId()
	changed := []extent{{5*mib + kib64, kib64}, {10 * mib, kib64}, {12 * mib, 2 * kib64}}
	allocated2 := []extent{{0, kib64}, {mib + 4*kib, 8 * kib}, {5 * mib, 3 * kib64}, {12 * mib, 2 * kib64}}

	t.Run("allocated", func(t *testing.T) {
		for _, tc := range []struct {
			c     clients
			snap  string
			start int64
			want  []extent
		}{
			{variable, snap1, 0, written},
			{fixed, snap1, 0, blocksOf(written...)},
			{variable, snap2, 0, allocated2},
			{fixed, snap2, 0, blocksOf(allocated2...)},
			// From inside an extent: VARIABLE_LENGTH starts there,
			// FIXED_LENGTH at the block that holds it.
			{variable, snap1, 5*mib + 100*kib, []extent{{5*mib + 100*kib, 92 * kib}, {10 * mib, kib64}}},
			{fixed, snap1, 5*mib + 100*kib, []extent{{5*mib + kib64, kib64}, {5*mib + 2*kib64, kib64}, {10 * mib, kib64}}},
		} {
			for _, maxResults := range []int32{0, 1, 2} {
				s, err := allocated(t, tc.c, tc.snap, tc.start, maxResults)
				if err != nil {
					t.Fatal(err)
				}
				checkStream(t, s, tc.want, maxResults)
			}
		}
		// Independently of the driver: SEEK_DATA/SEEK_HOLE on the file.
		f, err := os.Open(fixed.state + "/snapshots/" + snap1 + ".img")
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		var seek []extent
		for off := int64(0); ; {
			data, err := f.Seek(off, 3) // SEEK_DATA
			if err != nil {
				break // ENXIO: no data after off
			}
			hole, err := f.Seek(data, 4) // SEEK_HOLE
			if err != nil {
				t.Fatal(err)
			}
			seek, off = append(seek, extent{data, hole - data}), hole
		}
		if !reflect.DeepEqual(seek, written) {
			t.Errorf("SEEK_DATA/SEEK_HOLE on the snapshot file: %v, want what was written: %v", seek, written)
		}
	})

	t.Run("delta", func(t *testing.T) {
		for _, tc := range []struct {
			c     clients
			start int64
			want  []extent
		}{
			{variable, 0, []extent{{5*mib + kib64, kib64}, {10 * mib, kib64}, {12 * mib, 2 * kib64}}},
			{fixed, 0, blocksOf(changed...)},
			{variable, 12*mib + 10*kib, []extent{{12*mib + 10*kib, 2*kib64 - 10*kib}}},
			{fixed, 12*mib + 10*kib, []extent{{12 * mib, kib64}, {12*mib + kib64, kib64}}},
			{fixed, 12*mib + 2*kib64, nil},
		} {
			for _, maxResults := range []int32{0, 1, 3} {
				s, err := delta(t, tc.c, snap1, snap2, tc.start, maxResults)
				if err != nil {
					t.Fatal(err)
				}
				checkStream(t, s, tc.want, maxResults)
			}
		}
		// A snapshot against itself has no changes.
		if s, err := delta(t, fixed, snap2, snap2, 0, 0); err != nil || len(s.Extents) != 0 {
			t.Errorf("delta of a snapshot with itself: %v, %v", s.Extents, err)
		}
	})

	t.Run("errors", func(t *testing.T) {
		other := createVolume(t, fixed, "pvc-other", volLen, blockCap, nil)
		snapOther := createSnapshot(t, fixed, "snap-other", other.GetVolumeId()).GetSnapshotId()
		// At the end: one message, no extents, the capacity.
		if s, err := allocated(t, fixed, snap1, volLen, 0); err != nil || s.Messages != 1 || len(s.Extents) != 0 || s.Capacity != volLen {
			t.Errorf("allocated from the end: %+v, %v; want one empty message with the capacity", s, err)
		}
		for _, tc := range []struct {
			name string
			err  error
			want codes.Code
		}{
			{"allocated: no snapshot id", second(allocated(t, fixed, "", 0, 0)), codes.InvalidArgument},
			{"allocated: unknown snapshot", second(allocated(t, fixed, "snap-00000000000000000000000000000000", 0, 0)), codes.NotFound},
			{"allocated: a volume id", second(allocated(t, fixed, vol.GetVolumeId(), 0, 0)), codes.NotFound},
			{"allocated: past the end", second(allocated(t, fixed, snap1, volLen+1, 0)), codes.OutOfRange},
			{"allocated: negative offset", second(allocated(t, fixed, snap1, -1, 0)), codes.OutOfRange},
			{"allocated: negative max_results", second(allocated(t, fixed, snap1, 0, -1)), codes.InvalidArgument},
			{"delta: no base", second(delta(t, fixed, "", snap2, 0, 0)), codes.InvalidArgument},
			{"delta: no target", second(delta(t, fixed, snap1, "", 0, 0)), codes.InvalidArgument},
			{"delta: unknown base", second(delta(t, fixed, "no-such-snapshot", snap2, 0, 0)), codes.NotFound},
			{"delta: other volume", second(delta(t, fixed, snapOther, snap2, 0, 0)), codes.InvalidArgument},
			{"delta: past the end", second(delta(t, fixed, snap1, snap2, volLen+1, 0)), codes.OutOfRange},
		} {
			if status.Code(tc.err) != tc.want {
				t.Errorf("%s: %v, want %v", tc.name, tc.err, tc.want)
			}
		}
	})
}

func second[A any](_ A, err error) error { return err }

func checkStream(t *testing.T, s stream, want []extent, maxResults int32) {
	t.Helper()
	if !reflect.DeepEqual(s.Extents, want) && len(s.Extents)+len(want) > 0 {
		t.Errorf("max_results %d: %v, want %v", maxResults, s.Extents, want)
	}
	if s.Capacity != volLen {
		t.Errorf("capacity %d, want %d", s.Capacity, volLen)
	}
	if maxResults > 0 && s.MaxLen > int(maxResults) {
		t.Errorf("a message with %d entries, max_results %d", s.MaxLen, maxResults)
	}
	if s.Messages == 0 {
		t.Error("no message")
	}
}

// write writes e through the block device dev (data, or random bytes when
// data is nil), synced, and returns what it wrote.
func write(t *testing.T, dev string, e extent, data []byte) []byte {
	t.Helper()
	if data == nil {
		data = make([]byte, e.Len)
		rand.Read(data)
	}
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(data, e.Off); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	return data
}
