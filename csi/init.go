package csi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
)

// ExitExists is the mover's exit code for "the repository already exists"
// (cmd/mover/exitcodes.go); InitRepository takes it as success.
const ExitExists = 3

// InitArgs say where to initialise a repository.
type InitArgs struct {
	// Namespace of the Job (required).
	Namespace string
	// Operation names the Job (required); see ExportArgs.Operation.
	Operation string
	// InitArgs are added to `mover init` (e.g. "--chunker=fixed").
	InitArgs []string
	// Job shapes the mover Job (Image and Secret are required); its
	// Secret's MOVER_REPOSITORY (or Job.Repository) is the repository.
	Job JobOptions
	// Timing of the waits.
	Timing Timing
	// Log receives one line per step (default: none).
	Log *slog.Logger
}

// InitRepository runs `mover init` in a Job that mounts no volume. It
// reports created=false, and no error, when the repository already exists
// (the mover's exit code ExitExists): two control planes racing to create
// one repository both succeed, and exactly one of them created it, since
// the repository's config object is written only if absent. The Job is
// deleted once it has an outcome; an interrupted call leaves it for a
// rerun with the same Operation.
func (c *Clients) InitRepository(ctx context.Context, args InitArgs) (created bool, err error) {
	if err := c.validate(); err != nil {
		return false, err
	}
	if err := ValidateOperation(args.Operation); err != nil {
		return false, err
	}
	if args.Namespace == "" {
		return false, fmt.Errorf("%w: missing Namespace", ErrInvalidArgs)
	}
	if err := args.Job.validate(); err != nil {
		return false, err
	}
	tm := args.Timing.withDefaults(args.Job.activeDeadline())
	log := logger(args.Log).With("operation", args.Operation, "namespace", args.Namespace)
	ns, op := args.Namespace, args.Operation
	res, err := c.finishedJob(ctx, ns, op, tm)
	if res == nil && err == nil {
		job := buildJob(jobSpec{ns: ns, op: op, args: append([]string{"init"}, args.InitArgs...)}, &args.Job)
		_, err = c.runJob(ctx, job, tm, log)
	}
	var jf *JobFailedError
	if errors.As(err, &jf) && jf.ExitCode == ExitExists {
		err = nil
	} else if err == nil {
		created = true
	}
	if err := c.settle(ctx, ns, op, err, "repository initialised", false, false, log); err != nil {
		return false, err
	}
	return created, nil
}
