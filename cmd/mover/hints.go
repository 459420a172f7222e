package main

import (
	"errors"
	"strings"

	"github.com/blockmover/blockmover/repo"
	"github.com/spf13/cobra"
)

// The libraries' errors say what is wrong; which mover command fixes it is
// the CLI's to say. hints adds that advice to a command's error, once, in
// the one line a person reads and in the pod's termination message.

// hintRule is one piece of advice for errors that match err.
type hintRule struct {
	err  error
	hint string
}

func hintRules() []hintRule {
	return []hintRule{
		{repo.ErrNotRepository, "run mover init first"},
		{repo.ErrIndexDamaged, "run mover repair index"},
		{repo.ErrBlobMissing, "run mover repair index, then mover repair snapshots"},
		{repo.ErrLeaseHeld, "--stale-lock sets when a silent holder is taken over"},
		{repo.ErrSnapshotNotFound, "mover snapshots lists them"},
		{repo.ErrAuth, "mover check --read-data names the damaged objects"},
	}
}

// hinted is an error with the CLI's advice appended.
type hinted struct {
	err  error
	hint string
}

func (h hinted) Error() string { return h.err.Error() + " (" + h.hint + ")" }
func (h hinted) Unwrap() error { return h.err }

// withHint returns err with the advice of the first rule it matches, or
// err itself when no rule matches or the text already says the advice.
func withHint(err error) error {
	if err == nil || errors.As(err, new(hinted)) {
		return err
	}
	for _, r := range hintRules() {
		if errors.Is(err, r.err) {
			if strings.Contains(err.Error(), r.hint) {
				return err
			}
			return hinted{err, r.hint}
		}
	}
	return err
}

// installHints makes every command's error carry its advice. The commands
// with pod flags add it themselves before writing their termination
// message (podState.attach); withHint adds advice only once.
func installHints(c *cobra.Command) {
	if run := c.RunE; run != nil {
		c.RunE = func(cmd *cobra.Command, args []string) error { return withHint(run(cmd, args)) }
	}
	for _, sub := range c.Commands() {
		installHints(sub)
	}
}
