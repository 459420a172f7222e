package bench

import (
	"fmt"
	"strings"

	"github.com/blockmover/blockmover/internal/units"
)

// Scenario is what a benchmark runs on: a synthetic volume and the change
// that turns it into the volume of the incremental runs.
type Scenario struct {
	Name   string     `json:"name"`
	Volume Spec       `json:"volume"`
	Change ChangeSpec `json:"change"`
}

// Validate checks the scenario.
func (s Scenario) Validate() error {
	if err := s.Volume.Validate(); err != nil {
		return err
	}
	return s.Change.Validate(s.Volume.Size)
}

// Build returns the scenario's volume and the changed volume.
func (s Scenario) Build(corpus *Corpus) (*Volume, *Changed, error) {
	v, err := NewVolume(s.Volume, corpus)
	if err != nil {
		return nil, nil, err
	}
	c, err := v.Change(s.Change)
	if err != nil {
		return nil, nil, err
	}
	return v, c, nil
}

// String describes the scenario in one line.
func (s Scenario) String() string {
	v := s.Volume
	var parts []string
	add := func(f float64, what string) {
		if f > 0 {
			parts = append(parts, fmt.Sprintf("%s %s", pct(f), what))
		}
	}
	add(v.Zero, "zeros")
	add(v.Compressible, fmt.Sprintf("compressible (%.3g×)", v.ratio()))
	add(v.File, "file data")
	add(v.Duplicate, "duplicates")
	add(1-v.Zero-v.Compressible-v.File-v.Duplicate, "random")
	d := fmt.Sprintf("%s, %s", units.Bytes(v.Size), strings.Join(parts, ", "))
	if s.Name != "" {
		d = s.Name + ": " + d
	}
	return d
}

// ChangeString describes the change in one line.
func (s Scenario) ChangeString() string {
	c := s.Change
	if c.Rate == 0 {
		return "no change"
	}
	d := fmt.Sprintf("%s %s, %s writes", pct(c.Rate), c.Pattern, units.Bytes(c.writeSize()))
	if c.Pattern == Clustered {
		d += fmt.Sprintf(" in %d runs", c.clusters())
	}
	if c.Content == Compressible {
		d += ", compressible content"
	}
	return d
}

func pct(f float64) string {
	p := 100 * f
	if p >= 1 || p == 0 {
		return fmt.Sprintf("%.0f%%", p)
	}
	return fmt.Sprintf("%.2g%%", p)
}

// Presets are named scenarios of common volumes. Every preset uses only
// synthetic classes (no corpus), so the same preset, size and seed give
// the same bytes on any machine.
//
//   - empty-disk: a freshly formatted volume: 97% never written (zeros), a
//     little file-system metadata; 0.1% scattered 4 KiB writes.
//   - vm-image: an OS disk: 40% free space, 35% binaries and libraries
//     (about 2.5× compressible), 10% copies (packages and caches stored
//     twice), 15% incompressible (compressed archives, media); 1% changed in
//     256 clustered runs of 4 KiB writes.
//   - database: a database volume: 10% preallocated zeros, 70% table pages
//     (3× compressible), 20% indexes and compressed blobs; 1% changed in 64
//     clustered runs of 8 KiB pages, with compressible content.
//   - random: encrypted or compressed content only; 1% changed in
//     scattered 64 KiB writes.
//   - mixed: a quarter each of zeros, 2× compressible, duplicate and random
//     data; 1% scattered 4 KiB writes.
func Presets() []string { return []string{"empty-disk", "vm-image", "database", "random", "mixed"} }

// Preset returns the named preset at a size and seed.
func Preset(name string, size int64, seed uint64) (Scenario, error) {
	s := Scenario{Name: name, Volume: Spec{Size: size, Seed: seed}}
	v, c := &s.Volume, &s.Change
	switch name {
	case "empty-disk":
		v.Zero, v.Compressible, v.Ratio = 0.97, 0.03, 3
		*c = ChangeSpec{Rate: 0.001, Pattern: Scattered, WriteSize: 4 << 10}
	case "vm-image":
		v.Zero, v.Compressible, v.Ratio, v.Duplicate = 0.40, 0.35, 2.5, 0.10
		*c = ChangeSpec{Rate: 0.01, Pattern: Clustered, WriteSize: 4 << 10, Clusters: 256}
	case "database":
		v.Zero, v.Compressible, v.Ratio = 0.10, 0.70, 3
		*c = ChangeSpec{Rate: 0.01, Pattern: Clustered, WriteSize: 8 << 10, Clusters: 64, Content: Compressible}
	case "random":
		*c = ChangeSpec{Rate: 0.01, Pattern: Scattered, WriteSize: 64 << 10}
	case "mixed":
		v.Zero, v.Compressible, v.Ratio, v.Duplicate = 0.25, 0.25, 2, 0.25
		*c = ChangeSpec{Rate: 0.01, Pattern: Scattered, WriteSize: 4 << 10}
	default:
		return Scenario{}, fmt.Errorf("%w: unknown preset %q (want one of %s)", ErrInvalidSpec, name, strings.Join(Presets(), ", "))
	}
	return s, s.Validate()
}
