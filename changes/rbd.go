package changes

import (
	"fmt"
)

// rbdExists accepts rbd's "true"/"false" strings and plain booleans.
type rbdExists bool

func (e *rbdExists) UnmarshalJSON(b []byte) error {
	switch string(b) {
	case `true`, `"true"`:
		*e = true
	case `false`, `"false"`:
		*e = false
	default:
		return fmt.Errorf("exists is %s (want true or false)", b)
	}
	return nil
}

// rbd reads rbd diff's array. An extent that no longer exists (discarded,
// now zeros) is a change like any other.
func (p *changeParser) rbd() error {
	if _, err := p.open("the document", '[', false); err != nil {
		return err
	}
	var d struct {
		Offset int64     `json:"offset"`
		Length int64     `json:"length"`
		Exists rbdExists `json:"exists"`
	}
	for i := 0; p.more(); i++ {
		at := loc{"entry ", i, ""}
		d.Offset, d.Length = missing, missing
		if err := p.decode(&d); err != nil {
			return p.jsonError(at.String(), err)
		}
		if d.Offset == missing || d.Length == missing {
			return p.errorf("%s lacks offset or length", at)
		}
		if err := p.add(at, Extent{Offset: d.Offset, Length: d.Length}); err != nil {
			return err
		}
	}
	return p.close("end")
}
