package csi

import (
	"context"
	"errors"
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
	_, err = c.RunCommand(ctx, CommandArgs{Namespace: args.Namespace, Operation: args.Operation,
		Command: append([]string{"init"}, args.InitArgs...), Job: args.Job, Timing: args.Timing, Log: args.Log})
	var jf *JobFailedError
	if errors.As(err, &jf) && jf.ExitCode == ExitExists {
		return false, nil
	}
	return err == nil, err
}
