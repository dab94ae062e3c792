package child

import (
	"context"
	"math/rand/v2"
	"testing"

	"github.com/globalreplica/globalreplica/crdt"
)

// region is a model region in the remote differential tests.
type region struct {
	store *crdt.Store
	ops   []*crdt.Op // ops it made, in sequence order
	next  map[string]int
}

// history is one round of the remote differential tests: the engine's
// region (iad) and two model regions (fra, sgp) write concurrently, ops
// travel in random batches, and mirror is the model replica of the
// engine's region (it receives exactly what the engine receives, and the
// engine's own ops read back from its op log).
type history struct {
	t          *testing.T
	e          *Engine
	r          *rand.Rand
	regions    map[string]*region
	mirror     *crdt.Store
	own        []*crdt.Op
	engineNext map[string]int
	// chains, when set, deliver through ApplyChains: a batch is split in
	// two and both halves are prepared before the first is committed.
	chains map[string]*ApplyChain
}

var remoteRegions = []string{"fra", "sgp"}

// newHistory wipes the engine's Redis and starts a round seeded by seed.
func newHistory(t *testing.T, e *Engine, seed1, seed2 uint64) *history {
	t.Helper()
	ctx := context.Background()
	if err := e.rdb.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if err := e.MarkReady(ctx); err != nil { // a wiped Redis refuses writes until marked
		t.Fatal(err)
	}
	h := &history{
		t: t, e: e, r: rand.New(rand.NewPCG(seed1, seed2)),
		regions: map[string]*region{}, mirror: crdt.NewStore("iad"), engineNext: map[string]int{},
	}
	for _, name := range remoteRegions {
		h.regions[name] = &region{store: crdt.NewStore(name), next: map[string]int{}}
	}
	return h
}

// randomRemote picks fra or sgp.
func (h *history) randomRemote() string { return remoteRegions[h.r.IntN(2)] }

// localWrite runs a random write on the engine and moves its op log into
// own (and the mirror), as the shipper would.
func (h *history) localWrite(now int64) {
	c := randomCmd(h.r, now)
	_, _ = h.e.Write(context.Background(), c.args[0], c.args[1:]...)
	ctx := context.Background()
	raw, err := h.e.ReadLog(ctx, 1000)
	if err != nil {
		h.t.Fatal(err)
	}
	if _, err := h.e.TrimLog(ctx, lastSeq(h.t, raw)); err != nil {
		h.t.Fatal(err)
	}
	for _, b := range raw {
		op, err := crdt.UnmarshalOp(b)
		if err != nil {
			h.t.Fatalf("engine op does not decode: %v", err)
		}
		h.mirror.Apply(op)
		h.own = append(h.own, op)
	}
}

// remoteWrite runs a random write in a model region, its clock skewed by up
// to ±50 ms.
func (h *history) remoteWrite(now int64) {
	reg := h.regions[h.randomRemote()]
	skew := int64(h.r.IntN(101) - 50)
	c := randomCmd(h.r, now+skew)
	if _, op, _ := c.model(reg.store, now+skew); op != nil {
		reg.ops = append(reg.ops, op)
	}
}

// deliverToEngine applies the next random batch of origin's ops to the
// engine (and the mirror); with redeliver, sometimes with the last applied
// op again in front. ok is false when nothing was left to deliver.
func (h *history) deliverToEngine(origin string, redeliver bool) (res ApplyResult, n int, ok bool) {
	src := h.regions[origin].ops
	i := h.engineNext[origin]
	if i >= len(src) {
		return res, 0, false
	}
	n = 1 + h.r.IntN(len(src)-i)
	var batch [][]byte
	for _, op := range src[i : i+n] {
		b, err := op.MarshalBinary()
		if err != nil {
			h.t.Fatal(err)
		}
		batch = append(batch, b)
		h.mirror.Apply(op)
	}
	if redeliver && h.r.IntN(4) == 0 && i > 0 { // redelivery of an applied op is skipped
		b, _ := src[i-1].MarshalBinary()
		batch = append([][]byte{b}, batch...)
	}
	var err error
	if h.chains != nil && len(batch) >= 2 {
		res, err = h.applyAhead(origin, batch)
	} else {
		res, err = h.e.Apply(context.Background(), origin, batch)
	}
	if err != nil {
		h.t.Fatal(err)
	}
	h.engineNext[origin] = i + n
	return res, n, true
}

// applyAhead applies batch as two batches of origin's chain, the second
// prepared before the first is committed, and sums their results.
func (h *history) applyAhead(origin string, batch [][]byte) (ApplyResult, error) {
	ctx := context.Background()
	ch := h.chains[origin]
	if ch == nil {
		ch = h.e.newApplyChain(origin)
		h.chains[origin] = ch
	}
	cut := 1 + h.r.IntN(len(batch)-1)
	p1, err := ch.Prepare(ctx, batch[:cut])
	if err != nil {
		return ApplyResult{}, err
	}
	p2, err := ch.Prepare(ctx, batch[cut:])
	if err != nil {
		return ApplyResult{}, err
	}
	r1, err := ch.Commit(ctx, p1)
	if err != nil {
		return ApplyResult{}, err
	}
	r2, err := ch.Commit(ctx, p2)
	if err != nil {
		return ApplyResult{}, err
	}
	r2.Applied += r1.Applied
	r2.Fast += r1.Fast
	for k, c := range r1.Conflicts {
		if r2.Conflicts == nil {
			r2.Conflicts = map[string]int{}
		}
		r2.Conflicts[k] += c
	}
	return r2, nil
}

// all returns every region's ops by origin.
func (h *history) all() map[string][]*crdt.Op {
	return map[string][]*crdt.Op{"fra": h.regions["fra"].ops, "sgp": h.regions["sgp"].ops, "iad": h.own}
}

// deliverToModel moves a random prefix of what it lacks of every other
// region's ops to the model region to.
func (h *history) deliverToModel(to *region) {
	for from, src := range h.all() {
		if from == to.store.Region {
			continue
		}
		for to.next[from] < len(src) && h.r.IntN(2) == 0 {
			to.store.Apply(src[to.next[from]])
			to.next[from]++
		}
	}
}

// deliverAll delivers every op everywhere.
func (h *history) deliverAll() {
	for _, o := range remoteRegions {
		for {
			if _, _, ok := h.deliverToEngine(o, false); !ok {
				break
			}
		}
	}
	for _, reg := range h.regions {
		for from, src := range h.all() {
			for ; from != reg.store.Region && reg.next[from] < len(src); reg.next[from]++ {
				reg.store.Apply(src[reg.next[from]])
			}
		}
	}
}

// lastSeq returns the sequence of the last op of an op log read (0 when
// empty): trimming up to it empties what was read.
func lastSeq(t *testing.T, raw [][]byte) uint64 {
	t.Helper()
	seq, err := crdt.LastSeq(raw)
	if err != nil {
		t.Fatal(err)
	}
	return seq
}
