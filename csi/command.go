package csi

import (
	"context"
	"fmt"
	"log/slog"
	"slices"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// CommandArgs say which mover command to run in a Job that mounts no
// volume: init, gc, forget, check, a controller's maintenance.
type CommandArgs struct {
	// Namespace of the Job (required).
	Namespace string
	// Operation names the Job (required); see ExportArgs.Operation.
	Operation string
	// Command is the mover's arguments, e.g. {"gc", "--grace=1h"};
	// --json, --log-format=json and --termination-log are added.
	Command []string
	// Rerun: a Job of the operation that an earlier call left (a
	// control plane restarted while it ran) is waited for and deleted,
	// and the command runs again. Without Rerun its result is the answer,
	// as for the other operations. Set it when the arguments change from
	// call to call (a forget with today's names).
	Rerun bool
	// Job shapes the mover Job (Image and Secret are required); its
	// Secret's MOVER_REPOSITORY (or Job.Repository) is the repository.
	Job JobOptions
	// Timing of the waits.
	Timing Timing
	// Log receives one line per step (default: none).
	Log *slog.Logger
}

// RunCommand runs `mover ARGS.Command...` in a Job that mounts no volume,
// as the nobody user (65532) unless Job.RunAsUser says otherwise, and
// returns the mover's result. A failure of the mover is a
// *JobFailedError with its exit code and message. The Job is deleted
// once it has an outcome; an interrupted call leaves it for a rerun with
// the same Operation, which adopts it (see Rerun).
//
// RunCommand is safe for concurrent use with other operations; two
// concurrent calls with one Operation share one Job.
func (c *Clients) RunCommand(ctx context.Context, args CommandArgs) (*Result, error) {
	if err := c.validate(); err != nil {
		return nil, err
	}
	if err := ValidateOperation(args.Operation); err != nil {
		return nil, err
	}
	switch {
	case args.Namespace == "":
		return nil, fmt.Errorf("%w: missing Namespace", ErrInvalidArgs)
	case len(args.Command) == 0:
		return nil, fmt.Errorf("%w: missing Command", ErrInvalidArgs)
	}
	if err := args.Job.validate(); err != nil {
		return nil, err
	}
	tm := args.Timing.withDefaults(args.Job.activeDeadline())
	log := logger(args.Log).With("operation", args.Operation, "namespace", args.Namespace)
	ns, op := args.Namespace, args.Operation
	if args.Rerun {
		if err := c.retireJob(ctx, ns, op, tm, log); err != nil {
			return nil, err
		}
	}
	res, err := c.finishedJob(ctx, ns, op, tm)
	if res != nil {
		log.Info("found the finished mover Job of an earlier run")
	}
	if res == nil && err == nil {
		job := buildJob(jobSpec{ns: ns, op: op, args: slices.Clone(args.Command)}, &args.Job)
		res, err = c.runJob(ctx, job, tm, log)
	}
	if err := c.settle(ctx, ns, op, err, args.Command[0]+" done", false, false, log); err != nil {
		return nil, err
	}
	return res, nil
}

// retireJob waits for the Job of op that an earlier call left, if any,
// deletes it and waits until it is gone.
func (c *Clients) retireJob(ctx context.Context, ns, op string, tm Timing, log *slog.Logger) error {
	jobs := c.Kube.BatchV1().Jobs(ns)
	name := ObjectName(op)
	job, err := jobs.Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("mover Job %s/%s: %w", ns, name, explain(err))
	}
	if err := checkOwned("Job", job, op); err != nil {
		return err
	}
	log.Info("waiting for the Job of an earlier run before running again", "job", name)
	if _, err := c.WaitJob(ctx, ns, name, tm.Poll, tm.Job); err != nil {
		return err
	}
	if err := c.cleanup(ctx, ns, op, false); err != nil {
		return err
	}
	return poll(ctx, tm.Poll, tm.Bind, "the Job "+ns+"/"+name+" of an earlier run deleted",
		func(ctx context.Context) (bool, string, error) {
			_, err := jobs.Get(ctx, name, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				return true, "", nil
			}
			return false, "still there", err
		})
}
