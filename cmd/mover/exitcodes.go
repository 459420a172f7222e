package main

// The exit codes of mover: one table for the whole program (issue 16),
// following restic's where they overlap. A control plane acts on them: a
// Kubernetes Job's podFailurePolicy fails the Job at once on every code
// that is not retryable (csi.PermanentExitCodes, deploy/*-job.yaml), and
// retries the others up to its backoffLimit.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"

	"github.com/blockmover/blockmover/internal/safego"
	"github.com/blockmover/blockmover/mover"
	"github.com/blockmover/blockmover/repo"
	"github.com/blockmover/blockmover/repo/backend"
)

// Exit codes. Keep exitTable, the README, the root command's help and
// csi.PermanentExitCodes in step (TestExitTable checks them).
const (
	exitOK = 0
	// exitError: a failure that may succeed on retry (storage unreachable,
	// an I/O error, an interrupted upload), or one not classified.
	exitError = 1
	// exitUsage: the command line was wrong. Never a panic.
	exitUsage = 2
	// exitExists: init found a repository already there (perhaps made by
	// another init racing this one): a caller can open it instead.
	exitExists = 3
	// exitNoRepository: no repository at the location, or its config is
	// lost.
	exitNoRepository = 10
	// exitBusy: another maintenance command holds the repository's lease.
	exitBusy = 11
	// exitLocked: the repository cannot be unlocked: wrong or no password,
	// damaged key files.
	exitLocked = 12
	// exitStorageRefused: the storage refuses for good: access denied, no
	// such bucket, wrong region.
	exitStorageRefused = 13
	// exitNotFound: no such snapshot or volume.
	exitNotFound = 14
	// exitUnsuitable: the source or target cannot be used: not a block
	// device or regular file, inside the repository.
	exitUnsuitable = 15
	// exitNewerFormat: the repository has a newer format than this mover
	// reads.
	exitNewerFormat = 16
	// exitPanic: a bug in mover (a Go panic, recovered in run or in a
	// worker goroutine): exit 1 as the table has it, retryable,
	// told apart by the reason Panic. Never 2, which a Job takes as a
	// wrong command line.
	exitPanic = exitError
	// exitInterrupted: SIGINT. The repository is consistent; a rerun
	// reuses what was uploaded.
	exitInterrupted = 130
	// exitTerminated: SIGTERM (a pod evicted or deleted): retryable.
	exitTerminated = 143
)

// outcome is how a run ended: its exit code, a stable reason word for
// machines (the pod's termination message), and whether running the same
// command again may succeed.
type outcome struct {
	Code      int
	Reason    string
	Retryable bool
}

// exitCode is one row of the table.
type exitCode struct {
	outcome
	meaning string
}

// exitTable lists every exit code with its default reason, in order. It is
// what `mover --help` prints and the tests check the README and the Job's
// podFailurePolicy against.
func exitTable() []exitCode {
	return []exitCode{
		{outcome{exitOK, "", false}, "success"},
		{outcome{exitError, "Failed", true}, "failure that may succeed on retry (storage unreachable, I/O error); also a bug (a recovered Go panic)"},
		{outcome{exitUsage, "Usage", false}, "wrong command line"},
		{outcome{exitExists, "RepositoryExists", false}, "init found a repository already there"},
		{outcome{exitNoRepository, "NotRepository", false}, "no repository at the location (or its config is lost)"},
		{outcome{exitBusy, "RepositoryBusy", false}, "another maintenance command holds the repository's lease"},
		{outcome{exitLocked, "WrongPassword", false}, "the repository cannot be unlocked: wrong or no password, damaged key files"},
		{outcome{exitStorageRefused, "StorageRefused", false}, "the storage refuses: access denied, no such bucket, wrong region"},
		{outcome{exitNotFound, "SnapshotNotFound", false}, "no such snapshot or volume"},
		{outcome{exitUnsuitable, "Unsuitable", false}, "unsuitable source or target (not a device or file, inside the repository)"},
		{outcome{exitNewerFormat, "NewerFormat", false}, "the repository needs a newer mover"},
		{outcome{exitInterrupted, "Interrupted", true}, "interrupted (SIGINT)"},
		{outcome{exitTerminated, "Terminated", true}, "terminated (SIGTERM, e.g. a pod evicted)"},
	}
}

// exitCodesHelp is the table as the root command's help shows it.
func exitCodesHelp() string {
	s := "Exit codes (a Job retries only the retryable ones):\n"
	for _, e := range exitTable() {
		retry := ""
		if e.Retryable {
			retry = " (retryable)"
		}
		s += fmt.Sprintf("  %3d  %s%s\n", e.Code, e.meaning, retry)
	}
	return s
}

// codedError gives an error found in this package its outcome, where no
// sentinel of the libraries says it.
type codedError struct {
	outcome
	err error
}

func (e codedError) Error() string { return e.err.Error() }
func (e codedError) Unwrap() error { return e.err }

// errNoPassword: no password given where one is needed.
var errNoPassword = errors.New("no password: set MOVER_PASSWORD, or give --password-file or --key-file")

// unsuitable marks err as the source's or target's fault (exit 15).
func unsuitable(err error) error {
	if err == nil {
		return nil
	}
	return codedError{outcome{exitUnsuitable, "Unsuitable", false}, err}
}

// signalCause is the cause of the run's context when a signal cancelled it.
type signalCause struct{ sig os.Signal }

func (s signalCause) Error() string { return "received " + s.sig.String() }

// classify maps a failed run's error to its outcome: first what the
// command line and the signals say, then the libraries' sentinels (with
// errors.Is), else exitError. ctx is the run's context.
func classify(ctx context.Context, err error) outcome {
	var ce codedError
	var sc signalCause
	switch {
	case errors.As(err, new(usageError)) || isFlagError(err):
		return outcome{exitUsage, "Usage", false}
	case ctx.Err() != nil && errors.As(context.Cause(ctx), &sc):
		if sc.sig == syscall.SIGTERM {
			return outcome{exitTerminated, "Terminated", true}
		}
		return outcome{exitInterrupted, "Interrupted", true}
	case ctx.Err() != nil && errors.Is(err, context.Canceled):
		return outcome{exitInterrupted, "Interrupted", true}
	case errors.As(err, new(*safego.PanicError)):
		return outcome{exitPanic, "Panic", true}
	case errors.As(err, &ce):
		return ce.outcome
	case errors.Is(err, repo.ErrRepositoryExists):
		return outcome{exitExists, "RepositoryExists", false}
	case errors.Is(err, repo.ErrConfigLost):
		return outcome{exitNoRepository, "ConfigLost", false}
	case errors.Is(err, repo.ErrNotRepository):
		return outcome{exitNoRepository, "NotRepository", false}
	case errors.Is(err, repo.ErrNewerFormat):
		return outcome{exitNewerFormat, "NewerFormat", false}
	case errors.Is(err, repo.ErrLeaseHeld):
		return outcome{exitBusy, "RepositoryBusy", false}
	case errors.Is(err, repo.ErrWrongPassword):
		return outcome{exitLocked, "WrongPassword", false}
	case errors.Is(err, repo.ErrKeyFileDamaged):
		return outcome{exitLocked, "KeyDamaged", false}
	case errors.Is(err, errNoPassword):
		return outcome{exitLocked, "NoPassword", false}
	case errors.Is(err, repo.ErrSnapshotNotFound):
		return outcome{exitNotFound, "SnapshotNotFound", false}
	case errors.Is(err, mover.ErrNotVolume):
		return outcome{exitUnsuitable, "Unsuitable", false}
	case errors.Is(err, backend.ErrPermanent), errors.Is(err, repo.ErrObjectLockRequired):
		return outcome{exitStorageRefused, "StorageRefused", false}
	}
	return outcome{exitError, "Failed", true}
}
