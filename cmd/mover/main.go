// Command mover exports block volumes into a deduplicated, encrypted
// repository and imports them back. See `mover --help`.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"runtime/trace"
	"strings"
	"syscall"

	"github.com/blockmover/blockmover/internal/safego"
	"github.com/blockmover/blockmover/repo/backend"
	"github.com/spf13/cobra"
)

// usageError marks errors in the command line, which get a usage hint.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

func main() {
	ctx, stop := signalContext()
	code := run(ctx, os.Args[1:], &environment{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv})
	stop()
	os.Exit(code)
}

// signalContext returns a context that the first SIGINT or SIGTERM
// cancels, with the signal as its cause (run's exit code tells them
// apart); a second signal then kills at once. stop releases the signals.
func signalContext() (ctx context.Context, stop func()) {
	ctx, cancel := context.WithCancelCause(context.Background())
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		select {
		case s := <-sigs:
			signal.Stop(sigs)
			cancel(signalCause{s})
		case <-ctx.Done():
		}
	}()
	return ctx, func() {
		signal.Stop(sigs)
		cancel(nil)
	}
}

// run executes one command line and returns the exit code (exitcodes.go).
// Every failure is one line on stderr. A panic in the command's own
// goroutine is recovered and exits exitPanic, with its stack on stderr
// when MOVER_DEBUG is set.
func run(ctx context.Context, args []string, env *environment) (code int) {
	stderr := env.stderr
	defer func() {
		if v := recover(); v != nil {
			msg := strings.ReplaceAll(fmt.Sprint(v), "\n", " ")
			fmt.Fprintf(stderr, "mover: internal error (a bug; please report it): panic: %s\n", msg)
			if env.getenv("MOVER_DEBUG") != "" {
				stderr.Write(debug.Stack())
			}
			code = exitPanic
		}
	}()
	root := newRootCommand(ctx, env)
	root.SetArgs(args)
	root.SetIn(env.stdin)
	root.SetOut(env.stdout)
	root.SetErr(env.stderr)
	cmd, err := root.ExecuteC()
	if err == nil {
		return exitOK
	}
	msg := strings.ReplaceAll(err.Error(), "\n", " ")
	o := classify(ctx, err)
	if o.Code == exitUsage {
		fmt.Fprintf(stderr, "mover: %s (see '%s --help')\n", msg, cmd.CommandPath())
		return exitUsage
	}
	if (o.Code == exitInterrupted || o.Code == exitTerminated) && errors.Is(err, context.Canceled) {
		msg = "interrupted; the repository is consistent and a rerun reuses what was uploaded"
	}
	if !errors.As(err, new(reportedError)) { // already logged as JSON (pod.go)
		fmt.Fprintf(stderr, "mover: %s\n", msg)
	}
	if pe := new(safego.PanicError); errors.As(err, &pe) && env.getenv("MOVER_DEBUG") != "" {
		stderr.Write(pe.Stack)
	}
	return o.Code
}

// isFlagError recognises cobra's and pflag's own command-line errors.
func isFlagError(err error) bool {
	s := err.Error()
	for _, p := range []string{"unknown flag", "unknown shorthand flag", "flag needs an argument", "invalid argument", "unknown command", "accepts ", "requires at least", "required flag", "if any flags in the group", "bad flag syntax"} {
		if strings.Contains(s, p) {
			return true
		}
	}
	return false
}

// environment is what commands may touch of the outside world.
type environment struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
	// wrapBackend, if set, wraps every repository backend a command opens
	// (the crash tests count writes with it, and kill the process at one).
	wrapBackend func(backend.Backend) backend.Backend
	// beforeRun, if set, is called before every command runs, inside
	// cobra's execution (the tests panic in it).
	beforeRun func(*cobra.Command)
}

func newRootCommand(ctx context.Context, env *environment) *cobra.Command {
	g := &globalOptions{env: env}
	root := &cobra.Command{
		Use:   "mover",
		Short: "Move block volumes into a deduplicated, encrypted repository and back",
		Long: `mover exports block devices (or image files) into a repository on a local
filesystem or S3, deduplicated across every volume, compressed and encrypted,
and imports snapshots back onto devices.

The repository and its password come from flags or the environment:
  MOVER_REPOSITORY   repository location (a directory, or s3://BUCKET/PREFIX)
  MOVER_PASSWORD     repository password (or --password-file, --key-file)
  MOVER_DEBUG        if set, a panic prints its stack

` + exitCodesHelp(),
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       buildVersion().String(),
	}
	root.SetVersionTemplate("{{.Version}}\n")
	var stopProfile func()
	root.PersistentPreRunE = func(cmd *cobra.Command, args []string) error {
		if env.beforeRun != nil {
			env.beforeRun(cmd)
		}
		stop, err := startProfiles(g)
		stopProfile = stop
		return err
	}
	root.PersistentPostRun = func(cmd *cobra.Command, args []string) {
		if stopProfile != nil {
			stopProfile()
		}
	}
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return usageError{err} })
	g.register(root)
	root.AddCommand(
		newInitCommand(ctx, g),
		newExportCommand(ctx, g),
		newImportCommand(ctx, g),
		newSnapshotsCommand(ctx, g),
		newCheckCommand(ctx, g),
		newKeyCommand(ctx, g),
		newGenerateCommand(ctx, g),
		newForgetCommand(ctx, g),
		newGCCommand(ctx, g),
		newRepairCommand(ctx, g),
		newDiffCommand(ctx, g),
		newBenchCommand(ctx, g),
		newK8sCommand(ctx, g),
		newControllerCommand(ctx, g),
		newVersionCommand(g),
	)
	installHints(root)
	return root
}

// startProfiles starts the profiles the hidden flags ask for (--cpuprofile,
// --blockprofile, --trace) and returns the function that stops them and
// writes them out. On error, what was started is stopped.
func startProfiles(g *globalOptions) (func(), error) {
	var stops []func()
	stop := func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}
	if g.cpuProfile != "" {
		f, err := os.Create(g.cpuProfile)
		if err != nil {
			return nil, err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return nil, err
		}
		stops = append(stops, func() { pprof.StopCPUProfile(); f.Close() })
	}
	if g.blockProfile != "" {
		// Every blocking event and every contended lock is recorded.
		runtime.SetBlockProfileRate(1)
		runtime.SetMutexProfileFraction(1)
		stops = append(stops, func() {
			for name, file := range map[string]string{"block": g.blockProfile, "mutex": g.blockProfile + ".mutex"} {
				if f, err := os.Create(file); err == nil {
					_ = pprof.Lookup(name).WriteTo(f, 0)
					f.Close()
				}
			}
		})
	}
	if g.traceFile != "" {
		f, err := os.Create(g.traceFile)
		if err == nil {
			if err = trace.Start(f); err != nil {
				f.Close()
			}
		}
		if err != nil {
			stop()
			return nil, err
		}
		stops = append(stops, func() { trace.Stop(); f.Close() })
	}
	return stop, nil
}
