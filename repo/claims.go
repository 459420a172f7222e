package repo

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/blockmover/blockmover/repo/backend"
)

// Claims: writers that claim chunks from each other before they store
// them. Index files show what other writers stored; what a writer has
// reserved but not yet published in an index file (its open packs, the
// pack being uploaded, the delay before its next index file) is invisible
// to them, and a writer that reaches the same data a moment later stores it
// again. So each writer that runs beside others publishes the blobs it is
// storing, its outstanding set, in a small claim object, and a writer that
// meets a blob another live writer claimed defers it (ReserveShared
// returns Deferred) instead of storing it.
//
// Claims are advisory: nothing durable depends on them. A writer that
// deferred blobs must, before its snapshot, see every one of them in the
// index (AwaitDeferred refreshes it, so only packs that exist and index
// files that name them count) or store it itself: the claimant finished
// without it, gave it up, was presumed dead (its claim object unchanged
// for claimStale) or did not publish it within claimWait. The export
// checks, after its last flush and before its snapshot, that every blob it
// deferred is in the index, and fails otherwise. A crash of
// either writer at any instruction therefore never leaves a snapshot that
// names a blob outside a durable pack and index file; at worst a blob is
// stored twice, as without claims.
//
// Objects (FORMAT.md, "Claims"): claims/<writer>-<seq>, where writer is 16
// random hex digits drawn per Repository and seq counts up. A writer
// announces itself at its start with an empty claim object (one
// put; a lone writer publishes nothing more), and from when it sees another
// writer's claim object on, publishes its whole outstanding set in a new
// object at most every claimEvery when the set changed, and at least every
// claimBeat (a heartbeat), deleting its previous one. Readers list claims/
// at every refresh, before the index files, and read each writer's newest
// object once; a writer's claims are those of its newest object. At its
// end a writer deletes its claim object (after its snapshot, or after
// indexing what it uploaded when it fails); gc deletes objects older than
// claimExpire, left by killed writers.
//
// Between a claimant's index file and the reader's next index refresh
// (which may be a second later: refreshes cost at most a tenth of a
// writer's time), a blob whose claim was withdrawn is released, not
// forgotten: the reader defers it until that refresh (setClaims). And two
// writers that reach the same data together yield to each other by name
// (yieldWait), so that one follows the other instead of both storing it.
//
// Costs. A lone writer puts one empty claim object and deletes it at its
// end, and lists claims/ at each index refresh (one LIST beside the two a
// refresh makes). Beside another live writer, it puts a new claim object
// and deletes the previous one when its set changed, at most every
// claimEvery and spending at most a third of its time on it, and at least
// every claimBeat; it lists claims/, and reads each writer's changed
// object, as often. An object is small: the IDs of the chunks in its open
// and queued packs and not yet indexed (tens to hundreds, 32 bytes each).
// A writer remembers each chunk it deferred until its end (about 100 bytes
// a chunk with the export's record of where it lies): only chunks another
// writer was storing at that moment.
//
// Order: a writer's outstanding set holds a blob from its reservation until
// the index file that names it has been written (SavePack records a pack
// as unindexed before the blobs leave the reservations, and flushIndex
// keeps them outstanding until its put returns). So an object that omits a
// blob the writer had claimed was computed after the blob was indexed, or
// after the writer gave it up, and a reader that lists claims/ before
// index/ (refreshIndex does) finds the index file of every blob whose claim
// it saw withdrawn.

// Claim policy.
const (
	claimsPrefix = "claims/"
	aadClaims    = "blockmover claims v1 "
	// claimEvery is the least time between two claim objects of a
	// writer: the latency with which others see its new reservations.
	claimEvery = 10 * time.Millisecond
	// claimBeat: beside others, a writer publishes a new claim object at
	// least this often, changed or not, so that they can tell it lives.
	claimBeat = time.Second
	// claimStale: a writer whose newest claim object has not changed for
	// this long (as the reader's clock measures) is presumed dead; its
	// claims are ignored.
	claimStale = 5 * time.Second
	// claimWait bounds the time AwaitDeferred waits for the blobs of live
	// writers before the caller stores them itself.
	claimWait = time.Minute
	// ClaimExpire: gc deletes claim objects older than this (by the
	// storage's times): a live writer beside others replaces its object
	// every claimBeat, and a lone one's presence object costs nothing
	// if deleted (it publishes again once it sees another writer).
	ClaimExpire = time.Hour
	// Two writers that reach the same data at the same moment both store
	// it, chunk after chunk, as long as each reserves a chunk before the
	// other's claim on it arrives. So a writer that defers to, or finds
	// it stores the same blobs as, a writer whose name sorts before its
	// own yields for yieldFor: before it calls a blob new it waits up to
	// yieldWait (polling every yieldPoll) for that writer's claim on it.
	// The other goes on at full speed; this one follows it, deferring,
	// until their data part.
	yieldFor  = 100 * time.Millisecond
	yieldWait = 30 * time.Millisecond
	yieldPoll = 2 * time.Millisecond
	// maxClaims bounds the blobs read from one claim object.
	maxClaims = 1 << 22
)

// Reservation is ReserveShared's answer.
type Reservation uint8

const (
	// Have: the repository holds the blob, or this Repository is storing
	// it: reference it.
	Have Reservation = iota
	// Store: the blob is new; the caller must store it (or fail).
	Store
	// Deferred: another live writer claimed the blob. Reference it
	// without storing it, and call AwaitDeferred before the snapshot.
	Deferred
)

// claims is a Repository's claim state (see refresher.claims).
type claims struct {
	released   map[ID]release // see setClaims
	yieldUntil time.Time      // see yieldWait
	nextPub    time.Time      // no publication of a changed set before
	pub        sync.Mutex     // one publication at a time
	run        sync.Mutex     // one claims refresh at a time
	next       time.Time      // no claims refresh from KeepClaims before
	mu         sync.Mutex
	writer     string    // this writer's name in claim keys
	seq        uint64    // of the next object
	key        string    // this writer's newest claim object ("": none)
	announced  bool      // the first object was put (or tried)
	ended      bool      // Withdraw ran: publish nothing more
	dirty      bool      // the outstanding set may have changed since key
	published  time.Time // when key was put
	others     map[string]*claimant
	claimed    map[ID]string // blob → the writer whose newest object claims it
	deferred   map[ID]string // blobs this writer deferred → their claimant

	// yieldFor and yieldWait are the constants of those names; tests
	// that must not depend on the machine's speed lengthen them.
	yieldFor, yieldWait time.Duration
}

// claimant is another writer as its claim objects show it.
type claimant struct {
	seq     uint64
	key     string
	changed time.Time // local time its newest object was first seen
	ids     []ID
}

func newClaims() *claims {
	return &claims{
		writer:    hex.EncodeToString(newRandom(8)),
		others:    map[string]*claimant{},
		claimed:   map[ID]string{},
		deferred:  map[ID]string{},
		released:  map[ID]release{},
		yieldFor:  yieldFor,
		yieldWait: yieldWait,
	}
}

// active reports whether another live writer's claim object is listed
// (a killed writer's left-behind object does not keep a writer publishing).
// Caller holds c.mu.
func (c *claims) active() bool {
	now := time.Now()
	for w := range c.others {
		if c.live(w, now) {
			return true
		}
	}
	return false
}

// live reports whether w is a writer whose claims count. Caller holds c.mu.
func (c *claims) live(w string, now time.Time) bool {
	o := c.others[w]
	return o != nil && now.Sub(o.changed) < claimStale
}

// claimsOf returns the Repository's claim state, nil if it has none (no
// index loaded, or the maintenance lease taken).
func (r *Repository) claimsOf() *claims {
	f := r.refresherOf()
	if f == nil || f.isOff() {
		return nil
	}
	return f.claims
}

// ReserveShared is Reserve for a writer that can store a blob later than
// it meets it (see claims above): Have if the repository holds blob id or
// this Repository is storing it, Deferred if another live writer claimed
// it, else Store, and the caller must store it. A caller that got Deferred
// must call AwaitDeferred before it saves a snapshot, and store the blobs
// it returns.
func (r *Repository) ReserveShared(id ID) Reservation {
	if r.idx.Has(id) {
		return Have
	}
	r.reserveRefresh()
	c := r.claimsOf()
	if c != nil {
		if r.deferTo(c, id) {
			return Deferred
		}
		// Following a writer through the same data: give its claim
		// a moment to arrive (see yieldWait).
		c.mu.Lock()
		yielding := time.Now().Before(c.yieldUntil)
		wait := c.yieldWait
		c.mu.Unlock()
		for start := time.Now(); yielding && time.Since(start) < wait; {
			time.Sleep(yieldPoll)
			if r.idx.Has(id) {
				return Have
			}
			if r.deferTo(c, id) {
				return Deferred
			}
		}
	}
	if !r.idx.Reserve(id) {
		return Have
	}
	if c != nil {
		c.mu.Lock()
		c.dirty = true
		c.mu.Unlock()
	}
	return Store
}

// deferTo reports whether blob id is claimed by another live writer, and
// if so records it as deferred. Deferring to a writer whose name sorts
// before this one's makes this one yield (see yieldWait).
func (r *Repository) deferTo(c *claims, id ID) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	w, ok := c.claimed[id]
	if !ok || !c.live(w, now) {
		rl, released := c.released[id]
		w, ok = rl.w, released
	}
	if !ok || r.idx.Has(id) {
		return false
	}
	c.deferred[id] = w
	if w < c.writer {
		c.yieldUntil = now.Add(c.yieldFor)
	}
	return true
}

// outstanding returns the blobs this Repository has reserved and not yet
// published in an index file (see the order above).
func (r *Repository) outstanding() []ID {
	r.idx.mu.RLock()
	ids := make([]ID, 0, len(r.idx.pending))
	for id := range r.idx.pending {
		ids = append(ids, id)
	}
	r.idx.mu.RUnlock()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.unindexed {
		for _, b := range p.Blobs {
			ids = append(ids, b.ID)
		}
	}
	for _, ps := range r.publishing {
		for _, p := range ps {
			for _, b := range p.Blobs {
				ids = append(ids, b.ID)
			}
		}
	}
	return ids
}

// claimKey returns the key of a writer's claim object.
func claimKey(writer string, seq uint64) string {
	return fmt.Sprintf("%s%s-%016x", claimsPrefix, writer, seq)
}

// parseClaimKey splits a claim object's key; ok is false for a key that
// is not one.
func parseClaimKey(key string) (writer string, seq uint64, ok bool) {
	name, found := strings.CutPrefix(key, claimsPrefix)
	if !found {
		return "", 0, false
	}
	writer, s, found := strings.Cut(name, "-")
	if !found || len(writer) != 16 || len(s) != 16 {
		return "", 0, false
	}
	if _, err := hex.DecodeString(writer); err != nil {
		return "", 0, false
	}
	seq, err := strconv.ParseUint(s, 16, 64)
	return writer, seq, err == nil
}

// encodeClaims is a claim object's body: 0x01 ‖ uvarint(n) ‖ id[32]*n.
func encodeClaims(ids []ID) []byte {
	b := make([]byte, 0, 1+binary.MaxVarintLen64+32*len(ids))
	b = append(b, 1)
	b = binary.AppendUvarint(b, uint64(len(ids)))
	for _, id := range ids {
		b = append(b, id[:]...)
	}
	return b
}

// decodeClaims parses a claim object's body.
func decodeClaims(b []byte) ([]ID, error) {
	if len(b) < 1 || b[0] != 1 {
		return nil, fmt.Errorf("%w: claim object version", errFormat)
	}
	n, k := binary.Uvarint(b[1:])
	if k <= 0 || n > maxClaims || uint64(len(b)-1-k) != 32*n {
		return nil, fmt.Errorf("%w: claim object length", errFormat)
	}
	b = b[1+k:]
	ids := make([]ID, n)
	for i := range ids {
		copy(ids[i][:], b[32*i:])
	}
	return ids, nil
}

// publishClaims puts this writer's first (empty) claim object, and then,
// while another writer's claim object is listed, its outstanding set when
// due. It deletes the object it replaces. Errors cost only deduplication.
func (r *Repository) publishClaims(ctx context.Context, c *claims) error {
	c.pub.Lock()
	defer c.pub.Unlock()
	c.mu.Lock()
	now := time.Now()
	since := now.Sub(c.published)
	due := !c.announced || c.active() && (c.dirty && now.After(c.nextPub) || since >= claimBeat)
	if !due || c.ended {
		c.mu.Unlock()
		return nil
	}
	first := !c.announced
	c.announced = true
	c.dirty = false
	key := claimKey(c.writer, c.seq)
	c.seq++
	c.mu.Unlock()
	var ids []ID
	if !first {
		ids = r.outstanding()
	}
	data := seal(r.aead, nil, encodeClaims(ids), []byte(aadClaims+strings.TrimPrefix(key, claimsPrefix)))
	if err := r.putVolatile(ctx, key, data); err != nil {
		return fmt.Errorf("writing claims: %w", err)
	}
	c.mu.Lock()
	old := c.key
	c.key, c.published = key, now
	// At most a third of the time on putting claims however slow the
	// storage.
	c.nextPub = time.Now().Add(max(claimEvery, 2*time.Since(now)))
	ended := c.ended
	c.mu.Unlock()
	if ended { // Withdraw ran meanwhile
		old = key
	}
	if old != "" {
		if err := r.be.Delete(ctx, old); err != nil && !errors.Is(err, backend.ErrNotFound) {
			return fmt.Errorf("deleting claims: %w", err)
		}
	}
	return nil
}

// putVolatile writes an object that need not survive a crash: without
// fsyncs where the backend offers it.
func (r *Repository) putVolatile(ctx context.Context, key string, data []byte) error {
	vp, ok := r.be.(backend.VolatilePutter)
	if !ok {
		return r.put(ctx, key, data)
	}
	err := vp.PutVolatile(ctx, key, data)
	if err == nil {
		r.written.Add(int64(len(data)))
	}
	return err
}

// readClaims lists the claim objects and reads each other writer's newest
// one if it is new. A writer whose objects are all gone finished (or gave
// up): its claims end.
func (r *Repository) readClaims(ctx context.Context, c *claims) error {
	newest := map[string]uint64{}
	keys := map[string]string{}
	c.mu.Lock()
	self := c.writer
	c.mu.Unlock()
	if err := r.be.List(ctx, claimsPrefix, func(oi backend.ObjectInfo) error {
		w, seq, ok := parseClaimKey(oi.Key)
		if !ok || w == self {
			return nil
		}
		if s, seen := newest[w]; !seen || seq > s {
			newest[w], keys[w] = seq, oi.Key
		}
		return nil
	}); err != nil {
		return fmt.Errorf("listing claims: %w", err)
	}
	for w, seq := range newest {
		c.mu.Lock()
		o := c.others[w]
		known := o != nil && o.seq >= seq
		c.mu.Unlock()
		if known {
			continue
		}
		ids, err := r.readClaimObject(ctx, keys[w])
		switch {
		case errors.Is(err, backend.ErrNotFound):
			continue // replaced meanwhile: the next look reads the newer one
		case damage(err):
			ids = nil // claims are advisory: a damaged object claims nothing
		case err != nil:
			return err
		}
		both := w < self && r.storing(ids)
		c.mu.Lock()
		if o = c.others[w]; o == nil || o.seq < seq {
			c.setClaims(w, &claimant{seq: seq, key: keys[w], changed: time.Now(), ids: ids})
		}
		if both {
			c.yieldUntil = time.Now().Add(c.yieldFor)
		}
		c.mu.Unlock()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for w := range c.others {
		if _, ok := newest[w]; !ok {
			c.setClaims(w, nil)
		}
	}
	return nil
}

// storing reports whether this Repository has reserved one of ids and not
// yet stored it: another writer and this one store the same data.
func (r *Repository) storing(ids []ID) bool {
	r.idx.mu.RLock()
	defer r.idx.mu.RUnlock()
	for _, id := range ids {
		if _, ok := r.idx.pending[id]; ok {
			return true
		}
	}
	return false
}

// setClaims replaces writer w's claims (nil: w is gone). Caller holds c.mu.
// A blob that w no longer claims is released: w indexed it (or gave it
// up), in an index file this writer may not have read yet, so it is still
// deferred to w until the next index refresh (see purgeReleased).
func (c *claims) setClaims(w string, o *claimant) {
	now := time.Now()
	if old := c.others[w]; old != nil {
		for _, id := range old.ids {
			if c.claimed[id] == w {
				delete(c.claimed, id)
				c.released[id] = release{w, now}
			}
		}
	}
	if o == nil {
		delete(c.others, w)
		return
	}
	c.others[w] = o
	for _, id := range o.ids {
		c.claimed[id] = w
		delete(c.released, id)
	}
}

// release is a blob's claim withdrawn by writer w at a time.
type release struct {
	w  string
	at time.Time
}

// purgeReleased forgets the blobs released before an index listing that
// started at listed and was read: each is in the index now, or was given
// up.
func (c *claims) purgeReleased(listed time.Time) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, rl := range c.released {
		if rl.at.Before(listed) {
			delete(c.released, id)
		}
	}
}

func (r *Repository) readClaimObject(ctx context.Context, key string) ([]ID, error) {
	data, err := backend.ReadAll(ctx, r.be, key, 0, -1)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", key, err)
	}
	plain, err := open(r.aead, nil, data, []byte(aadClaims+strings.TrimPrefix(key, claimsPrefix)))
	if err != nil {
		return nil, fmt.Errorf("claim object %s: %w", key, err)
	}
	ids, err := decodeClaims(plain)
	if err != nil {
		return nil, fmt.Errorf("claim object %s: %w", key, err)
	}
	return ids, nil
}

// refreshClaims reads the others' claims. It runs at the start of every
// index refresh, before the index files are listed (see the order above),
// and, while other writers are seen, every claimEvery from KeepClaims.
func (r *Repository) refreshClaims(ctx context.Context, c *claims) error {
	if c == nil {
		return nil
	}
	c.run.Lock()
	defer c.run.Unlock()
	start := time.Now()
	err := r.readClaims(ctx, c)
	c.mu.Lock()
	// At most a third of the time on reading claims however slow the
	// storage.
	c.next = time.Now().Add(max(claimEvery, 2*time.Since(start)))
	c.mu.Unlock()
	return err
}

// KeepClaims reads the others' claims if that is due (every claimEvery
// while other writers are seen), then refreshes the index if that is due
// (see maybeRefresh). A writer calls it, and PublishClaims, every
// claimEvery while it runs (from two goroutines: a slow put must not hold
// up the reading), so that its claims are published and others see it
// live also while all it meets is stored already. Errors cost only
// deduplication and are dropped (the index refresh warns).
func (r *Repository) KeepClaims(ctx context.Context) {
	if c := r.claimsOf(); c != nil {
		c.mu.Lock()
		due := c.active() && !time.Now().Before(c.next) && !c.ended
		c.mu.Unlock()
		if due {
			_ = r.refreshClaims(ctx, c)
		}
	}
	r.maybeRefresh(ctx)
}

// PublishClaims puts this writer's first, empty, claim object if it has
// not yet, and then, while other writers are seen, its outstanding set
// when that changed (at most every claimEvery) and at least every
// claimBeat. Errors cost only deduplication and are dropped.
func (r *Repository) PublishClaims(ctx context.Context) {
	if c := r.claimsOf(); c != nil {
		_ = r.publishClaims(ctx, c)
	}
}

// DeferredCount returns how many blobs ReserveShared deferred to other
// writers and AwaitDeferred has not yet found in the index.
func (r *Repository) DeferredCount() int {
	c := r.claimsOf()
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.deferred)
}

// AwaitDeferred waits until the blobs ids, which ReserveShared deferred,
// are in the index, refreshing it, and returns those the caller must
// store itself before a snapshot names them: blobs whose claimant finished
// or gave up without them, was presumed dead, or did not publish them
// within claimWait. It first writes an index file for this writer's saved
// packs, so that writers waiting for its blobs are not kept waiting. The
// caller stores what it returns (Reserve, a Packer, SavePack and Flush),
// and must not save a snapshot that names a blob of ids that Has does not
// then report.
func (r *Repository) AwaitDeferred(ctx context.Context, ids []ID) ([]ID, error) {
	c := r.claimsOf()
	if c == nil || len(ids) == 0 {
		return nil, nil
	}
	if err := r.flushIndex(ctx); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(claimWait)
	t := time.NewTicker(claimEvery)
	defer t.Stop()
	for {
		// The claims first, then the index files (see the order above):
		// a blob whose claim is withdrawn in what was read is in the
		// index files listed after it, or was given up.
		_ = r.publishClaims(ctx, c)
		_ = r.refreshClaims(ctx, c)
		claimed := r.stillClaimed(c, ids, time.Now())
		if err := r.refreshNow(ctx); err != nil && ctx.Err() != nil {
			return nil, err
		}
		var store []ID
		waiting := 0
		for _, id := range ids {
			switch {
			case r.idx.Has(id):
			case claimed[id] && time.Now().Before(deadline):
				waiting++
			default:
				store = append(store, id)
			}
		}
		if waiting == 0 {
			r.resolved(c, ids)
			return store, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}

// stillClaimed returns which of ids their claimant, live, still claims.
func (r *Repository) stillClaimed(c *claims, ids []ID, now time.Time) map[ID]bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := make(map[ID]bool, len(ids))
	for _, id := range ids {
		if w, ok := c.deferred[id]; ok && c.claimed[id] == w && c.live(w, now) {
			m[id] = true
		}
	}
	return m
}

// resolved forgets the claimants of ids.
func (r *Repository) resolved(c *claims, ids []ID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, id := range ids {
		delete(c.deferred, id)
	}
}

// WithdrawClaims deletes this writer's claim object and publishes none
// after it: call it when the writer is done, after its snapshot or after
// it failed (and Flush indexed what it uploaded). Other writers then store
// what they deferred to it and do not find in the index. Errors are
// dropped: a leftover object is presumed dead after claimStale and
// deleted by gc after ClaimExpire.
func (r *Repository) WithdrawClaims(ctx context.Context) {
	c := r.claimsOf()
	if c == nil {
		return
	}
	c.mu.Lock()
	key := c.key
	c.ended = true
	c.key = ""
	c.mu.Unlock()
	if key != "" {
		_ = r.be.Delete(ctx, key)
	}
}

// RemoveStaleClaims deletes the claim objects older than ClaimExpire (by
// the storage's times, as gc's grace period) and returns how many it
// deleted. gc calls it.
func RemoveStaleClaims(ctx context.Context, be backend.Backend, now time.Time) (int, error) {
	var stale []string
	if err := be.List(ctx, claimsPrefix, func(oi backend.ObjectInfo) error {
		if now.Sub(oi.ModTime) > ClaimExpire {
			stale = append(stale, oi.Key)
		}
		return nil
	}); err != nil {
		return 0, fmt.Errorf("listing claims: %w", err)
	}
	n := 0
	for _, k := range stale {
		if err := be.Delete(ctx, k); err != nil && !errors.Is(err, backend.ErrNotFound) {
			return n, fmt.Errorf("deleting stale claims: %w", err)
		}
		n++
	}
	return n, nil
}

// removeStaleClaims is gc's step that deletes the claim objects of killed
// writers (see RemoveStaleClaims).
func (g *gc) removeStaleClaims(ctx context.Context) error {
	n, err := RemoveStaleClaims(ctx, g.r.be, time.Now())
	if n > 0 {
		g.logf("deleted %d stale claim objects left by killed writers", n)
	}
	return err
}
