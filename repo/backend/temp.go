package backend

import (
	"context"
	"time"
)

// TempCleaner is implemented by backends that write objects through
// temporary files beside them (fs). A writer killed between creating its
// temporary file and publishing it leaves the file behind; no object
// refers to it and List never shows it.
type TempCleaner interface {
	// RemoveStaleTemp deletes the temporary files not modified for
	// olderThan, and returns how many it deleted and their size. A
	// write in progress keeps its file younger than any olderThan of
	// an hour or more. It is safe to call concurrently with other
	// methods.
	RemoveStaleTemp(ctx context.Context, olderThan time.Duration) (files int, bytes int64, err error)
}
