package repo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/blockmover/blockmover/internal/safego"
	"github.com/blockmover/blockmover/repo/backend"
)

// The maintenance lease lets one command at a time delete from a
// repository (gc, forget, repair index): see FORMAT.md, "The maintenance
// lease". It is built from create-only objects, so it needs nothing of the
// storage but what every backend has, and it never needs a person: a lease
// whose holder stopped renewing it is taken over.

const (
	leasePrefix    = "locks/lease/"
	legacyGCLock   = "locks/gc" // written by gc before the lease existed
	clockPrefix    = "locks/clock-"
	leaseEpochBits = 16 // hex digits of an epoch in a key
)

// DefaultStaleLease is how long a lease may go without renewal before
// another command takes it over.
const DefaultStaleLease = 10 * time.Minute

// ErrLeaseHeld: another maintenance command holds the lease.
var ErrLeaseHeld = errors.New("another maintenance command holds the repository's lease")

// ErrLeaseLost: this command's lease was taken over (it went without
// renewal for the stale period, e.g. while the process was paused). The
// command stops before its next deletion.
var ErrLeaseLost = errors.New("the maintenance lease was taken over by another command")

// LeaseOptions tune taking the lease.
type LeaseOptions struct {
	// Stale is how long a lease may go without renewal, by the storage's
	// clock, before it is taken over (default DefaultStaleLease). The
	// holder renews it every Stale/5.
	Stale time.Duration
	// Purpose names the command in the lease, for the message another
	// command prints ("gc", "forget", "repair index").
	Purpose string
}

// leaseHolder is the body of a lease's epoch object.
type leaseHolder struct {
	Purpose string    `json:"purpose"`
	Host    string    `json:"host"`
	PID     int       `json:"pid"`
	Boot    string    `json:"boot,omitempty"`  // kernel boot ID
	PIDNS   string    `json:"pidns,omitempty"` // PID namespace
	Time    time.Time `json:"time"`            // the holder's clock, for people
	// Token is random: the holder reads its epoch object back and owns the
	// epoch only if the token is its own (a retried put whose first try
	// was lost cannot tell another holder's object from its own by size).
	Token string `json:"token"`
}

func thisHolder(purpose string) leaseHolder {
	host, _ := os.Hostname()
	boot, pidns := processScope()
	return leaseHolder{Purpose: purpose, Host: host, PID: os.Getpid(), Boot: boot, PIDNS: pidns, Time: time.Now().UTC().Truncate(time.Second)}
}

// gone reports whether h is a process of this machine and PID namespace
// that no longer runs: its lease can be taken over at once.
func (h leaseHolder) gone() bool {
	me := thisHolder("")
	if h.Boot == "" || h.PIDNS == "" || h.Host != me.Host || h.Boot != me.Boot || h.PIDNS != me.PIDNS || h.PID == me.PID {
		return false
	}
	return !processAlive(h.PID)
}

// Lease is a held maintenance lease. Its methods are safe for concurrent
// use.
type Lease struct {
	be    backend.Backend
	epoch uint64
	key   string
	start time.Time // the epoch object's ModTime: the storage's clock
	stale time.Duration

	mu      sync.Mutex
	renewed time.Time // local monotonic time of the last renewal
	beats   int
	lastKey string // newest heartbeat object
	err     error  // why renewing failed, if it did
	stop    chan struct{}
	done    chan struct{}
}

// Start is when the lease was taken, by the storage's clock.
func (l *Lease) Start() time.Time { return l.start }

func epochKey(e uint64) string { return fmt.Sprintf("%s%0*x", leasePrefix, leaseEpochBits, e) }

// parseLeaseKey splits "locks/lease/<epoch>" or "locks/lease/<epoch>-<n>".
func parseLeaseKey(key string) (epoch uint64, heartbeat bool, ok bool) {
	name, found := strings.CutPrefix(key, leasePrefix)
	if !found {
		return 0, false, false
	}
	e, rest, hb := strings.Cut(name, "-")
	if len(e) != leaseEpochBits {
		return 0, false, false
	}
	v, err := strconv.ParseUint(e, 16, 64)
	if err != nil || v == 0 {
		return 0, false, false
	}
	if hb {
		if _, err := strconv.ParseUint(rest, 10, 32); err != nil {
			return 0, false, false
		}
	}
	return v, hb, true
}

type leaseView struct {
	epochs map[uint64]*epochView
	max    uint64
}

type epochView struct {
	keys    []string
	hasHead bool      // the epoch object itself exists
	newest  time.Time // newest ModTime of its objects
}

func readLeaseView(ctx context.Context, be backend.Backend) (*leaseView, error) {
	v := &leaseView{epochs: map[uint64]*epochView{}}
	err := be.List(ctx, leasePrefix, func(oi backend.ObjectInfo) error {
		e, hb, ok := parseLeaseKey(oi.Key)
		if !ok {
			return nil
		}
		ev := v.epochs[e]
		if ev == nil {
			ev = &epochView{}
			v.epochs[e] = ev
		}
		ev.keys = append(ev.keys, oi.Key)
		ev.hasHead = ev.hasHead || !hb
		if oi.ModTime.After(ev.newest) {
			ev.newest = oi.ModTime
		}
		v.max = max(v.max, e)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing the maintenance lease: %w", err)
	}
	return v, nil
}

// storageNow returns the storage's current time: the ModTime of an object
// written for the purpose (then deleted).
func storageNow(ctx context.Context, be backend.Backend) (time.Time, error) {
	key := fmt.Sprintf("%s%x", clockPrefix, newRandom(8))
	if err := be.Put(ctx, key, nil); err != nil {
		return time.Time{}, fmt.Errorf("reading the storage's clock: %w", err)
	}
	defer be.Delete(context.WithoutCancel(ctx), key)
	oi, err := be.Stat(ctx, key)
	if err != nil {
		return time.Time{}, fmt.Errorf("reading the storage's clock: %w", err)
	}
	return oi.ModTime, nil
}

// AcquireLease takes the repository's maintenance lease, taking over a
// lease whose holder has not renewed it for opts.Stale (or, on this
// machine, has exited). It fails with ErrLeaseHeld, saying who holds it and
// until when, if a live command holds it. Two commands that try at once
// never both succeed: each epoch of the lease is one create-only object.
// The lease is renewed in the background until Release.
func (r *Repository) AcquireLease(ctx context.Context, opts LeaseOptions) (*Lease, error) {
	// Maintenance relies on index positions that a refresh would shift.
	r.stopRefresh()
	return acquireLease(ctx, r.be, opts)
}

func acquireLease(ctx context.Context, be backend.Backend, opts LeaseOptions) (*Lease, error) {
	if opts.Stale <= 0 {
		opts.Stale = DefaultStaleLease
	}
	if err := clearLegacyLock(ctx, be, opts.Stale); err != nil {
		return nil, err
	}
	for attempt := 0; ; attempt++ {
		v, err := readLeaseView(ctx, be)
		if err != nil {
			return nil, err
		}
		if v.max > 0 {
			if err := judgeLease(ctx, be, v, opts.Stale); err != nil {
				return nil, err
			}
		}
		l, err := takeEpoch(ctx, be, v.max+1, opts)
		if errors.Is(err, backend.ErrExists) && attempt < 3 {
			continue // another command took this epoch first: judge it
		}
		if err != nil {
			return nil, err
		}
		// The old epochs are over: delete them, so that a paused holder
		// of one finds its epoch gone at its next check.
		for e, ev := range v.epochs {
			if e >= l.epoch {
				continue
			}
			for _, k := range ev.keys {
				if err := be.Delete(ctx, k); err != nil && !errors.Is(err, backend.ErrNotFound) {
					l.Release(ctx)
					return nil, fmt.Errorf("clearing a stale lease: %w", err)
				}
			}
		}
		l.run()
		return l, nil
	}
}

// judgeLease returns nil if the newest epoch in v is released or stale,
// else ErrLeaseHeld with the holder.
func judgeLease(ctx context.Context, be backend.Backend, v *leaseView, stale time.Duration) error {
	ev := v.epochs[v.max]
	if !ev.hasHead {
		return nil // released (or being released)
	}
	var h leaseHolder
	b, err := backend.ReadAll(ctx, be, epochKey(v.max), 0, -1)
	switch {
	case errors.Is(err, backend.ErrNotFound):
		return nil // released since the listing
	case err != nil:
		return fmt.Errorf("reading the maintenance lease: %w", err)
	}
	if json.Unmarshal(b, &h) == nil && h.gone() {
		return nil
	}
	now, err := storageNow(ctx, be)
	if err != nil {
		return err
	}
	if idle := now.Sub(ev.newest); idle >= stale {
		return nil
	}
	who := "an unknown holder"
	if h.Host != "" {
		who = fmt.Sprintf("%s on %s (pid %d)", h.Purpose, h.Host, h.PID)
	}
	return fmt.Errorf("%w: %s, last renewed %s; it is taken over if not renewed for %v, at %s",
		ErrLeaseHeld, who, ev.newest.UTC().Format(time.RFC3339), stale, ev.newest.Add(stale).UTC().Format(time.RFC3339))
}

func takeEpoch(ctx context.Context, be backend.Backend, epoch uint64, opts LeaseOptions) (*Lease, error) {
	h := thisHolder(opts.Purpose)
	h.Token = fmt.Sprintf("%x", newRandom(16))
	body, err := json.Marshal(h)
	if err != nil {
		return nil, err
	}
	key := epochKey(epoch)
	if err := be.Put(ctx, key, body); err != nil {
		if errors.Is(err, backend.ErrExists) {
			return nil, err
		}
		return nil, fmt.Errorf("taking the maintenance lease: %w", err)
	}
	switch got, err := backend.ReadAll(ctx, be, key, 0, -1); {
	case err != nil:
		return nil, fmt.Errorf("reading the maintenance lease back: %w", err)
	case !bytes.Equal(got, body):
		return nil, fmt.Errorf("lease epoch %d: %w", epoch, backend.ErrExists) // another command's
	}
	l := &Lease{be: be, epoch: epoch, key: key, stale: opts.Stale, renewed: time.Now(), lastKey: key}
	oi, err := be.Stat(ctx, key)
	if err != nil {
		l.Release(ctx)
		return nil, fmt.Errorf("reading the maintenance lease's time: %w", err)
	}
	l.start = oi.ModTime
	return l, nil
}

// clearLegacyLock removes the lock object of gc runs before the lease once
// it is stale; a fresh one means an old mover's gc may be running.
func clearLegacyLock(ctx context.Context, be backend.Backend, stale time.Duration) error {
	oi, err := be.Stat(ctx, legacyGCLock)
	if errors.Is(err, backend.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading %s: %w", legacyGCLock, err)
	}
	now, err := storageNow(ctx, be)
	if err != nil {
		return err
	}
	if now.Sub(oi.ModTime) < stale {
		return fmt.Errorf("%w: %s (from an earlier mover) since %s; it is taken over once %v old",
			ErrLeaseHeld, legacyGCLock, oi.ModTime.UTC().Format(time.RFC3339), stale)
	}
	if err := be.Delete(ctx, legacyGCLock); err != nil && !errors.Is(err, backend.ErrNotFound) {
		return fmt.Errorf("deleting the stale %s: %w", legacyGCLock, err)
	}
	return nil
}

// run renews the lease every stale/5 until Release.
func (l *Lease) run() {
	l.stop, l.done = make(chan struct{}), make(chan struct{})
	every := max(l.stale/5, 10*time.Millisecond)
	safego.Go(func() error {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-l.stop:
				return nil
			case <-t.C:
				ctx, cancel := context.WithTimeout(context.Background(), l.stale/2)
				l.renew(ctx)
				cancel()
			}
		}
	}, func(err error) {
		// A panic stops the renewals: the holder's Check then renews
		// itself or reports the lease lost.
		if err != nil {
			l.mu.Lock()
			l.err = err
			l.mu.Unlock()
		}
		close(l.done)
	})
}

// renew writes a new heartbeat object and deletes the previous one.
func (l *Lease) renew(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.beats++
	key := fmt.Sprintf("%s-%d", epochKey(l.epoch), l.beats)
	if err := l.be.Put(ctx, key, nil); err != nil {
		l.err = fmt.Errorf("renewing the maintenance lease: %w", err)
		return l.err
	}
	l.renewed, l.err = time.Now(), nil
	if l.lastKey != l.key {
		l.be.Delete(ctx, l.lastKey) // a leftover is deleted with the epoch
	}
	l.lastKey = key
	return nil
}

// Check confirms, before a batch of deletions, that the lease is still
// held: renewed less than half the stale period ago (renewing it now if
// not), its epoch object present and no newer epoch taken. It returns
// ErrLeaseLost (or the renewal's error) otherwise; the caller must then
// delete nothing more.
func (l *Lease) Check(ctx context.Context) error {
	l.mu.Lock()
	fresh := time.Since(l.renewed) < l.stale/2
	l.mu.Unlock()
	if !fresh {
		if err := l.renew(ctx); err != nil {
			return err
		}
	}
	v, err := readLeaseView(ctx, l.be)
	if err != nil {
		return err
	}
	if ev := v.epochs[l.epoch]; ev == nil || !ev.hasHead || v.max > l.epoch {
		return ErrLeaseLost
	}
	return nil
}

// Release stops renewing and deletes the lease's objects. It is safe to
// call more than once; it works even if ctx is cancelled.
func (l *Lease) Release(ctx context.Context) {
	if l.stop != nil {
		close(l.stop)
		<-l.done
		l.stop = nil
	}
	ctx = context.WithoutCancel(ctx)
	l.mu.Lock()
	defer l.mu.Unlock()
	// Heartbeats first: an epoch without its head object is released.
	keys := []string{l.lastKey}
	if v, err := readLeaseView(ctx, l.be); err == nil {
		if ev := v.epochs[l.epoch]; ev != nil {
			keys = ev.keys
		}
	}
	for _, k := range keys {
		if k != l.key {
			l.be.Delete(ctx, k)
		}
	}
	l.be.Delete(ctx, l.key)
}
