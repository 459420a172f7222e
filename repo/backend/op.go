package backend

import "strconv"

// Op names a Backend operation in retry events and fault counters.
type Op uint8

// The Backend operations.
const (
	OpPut Op = iota
	OpGet
	OpStat
	OpList
	OpDelete

	numOps = iota
)

// String returns the lower-case method name, e.g. "put".
func (o Op) String() string {
	switch o {
	case OpPut:
		return "put"
	case OpGet:
		return "get"
	case OpStat:
		return "stat"
	case OpList:
		return "list"
	case OpDelete:
		return "delete"
	}
	return "Op(" + strconv.Itoa(int(o)) + ")"
}
