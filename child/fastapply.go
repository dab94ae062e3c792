package child

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"

	"github.com/globalreplica/globalreplica/crdt"
)

// The fast path of a remote apply. Most ops a channel carries are string
// writes to keys that hold a live string (or nothing): for those the merge
// is computed here, with the crdt model, from the records read with one
// MGET before the call, and gr_apply only checks that each record is still
// the one read (compare-and-set) before it writes the merged one. That
// spares Redis, the region's one busy thread, the decoding of the op and of
// the record, the merge and the encoding, most of an apply's cost. An op
// whose record changed in between (a local write raced it), that meets a
// conflict (the conflict log is written by the general path), or that is
// not such a string write, is merged by gr_apply the general way; the
// atomicity of the batch and of the applied vector is unchanged.
//
// gr_apply's arguments: origin, ms, lc (the newest timestamp of the fast
// items, which the region's HLC observes), then per op either the encoded
// op or a fast item of six arguments:
//
//	"=", seq, key, record read ("" for no key), merged record, encoded op
//
// The encoded op is what gr_apply merges when the check fails.

// DefaultFastApplyMin is the smallest batch that takes the fast path. The
// fast path costs a round trip (the MGET) and the child's CPU for the
// merges, and saves Redis's: worth it when a channel has a backlog and
// Redis is what bounds the apply rate, not for the few ops a channel in
// step with its origin applies at a time, where the extra round trip
// only adds to the replication lag.
const DefaultFastApplyMin = 64

// casTag starts a fast item; an encoded op starts with a MessagePack array
// header, never with this.
const casTag = "="

// applyArgs builds gr_apply's arguments for a batch of one origin. With a
// chain, the records that batches the chain prepared before, and that are
// not yet known to be applied, stand in for what MGET read (see
// ApplyChain); ch nil reads Redis alone.
func (e *Engine) applyArgs(ctx context.Context, origin string, ops [][]byte, ch *ApplyChain) ([]any, error) {
	if len(ops) < e.cfg.FastApplyMin {
		return plainApplyArgs(origin, ops), nil
	}
	// A candidate is a string write without expiry of the origin: a plain
	// write read in place (set, merged by crdt.MergeStringSet), or any
	// other decoded into the model's Op (merged by MergeStringRecord).
	type fast struct {
		plain bool           // set is the op, read in place
		set   crdt.StringSet // plain
		op    *crdt.Op       // not plain: the op decoded
		key   string
		seq   uint64
		ts    crdt.Timestamp
		read  int // index of the key in names; -1: not a candidate
	}
	var (
		cand    = make([]fast, len(ops))
		names   []string
		index   = map[string]int{}
		touched []string // keys of ops that go the general way for sure (chain only)
	)
	for i, b := range ops {
		c := &cand[i]
		c.read = -1
		if c.set, c.plain = crdt.ParseStringSet(b); c.plain && c.set.ID.Region == origin {
			c.key, c.seq, c.ts = c.set.Key, c.set.ID.Seq, c.set.TS
		} else {
			c.plain = false
			op, err := crdt.UnmarshalOp(b)
			if err != nil {
				continue // gr_apply reports a corrupt op
			}
			if op.ID.Region != origin || len(op.Elems) != 1 || op.Exp != nil || op.Elems[0].Type != crdt.TypeString {
				if ch != nil {
					touched = append(touched, op.Key)
				}
				continue
			}
			c.op, c.key, c.seq, c.ts = op, op.Key, op.ID.Seq, op.TS
		}
		j, ok := index[c.key]
		if !ok {
			j = len(names)
			index[c.key] = j
			names = append(names, c.key)
		}
		c.read = j
	}
	if len(names) == 0 {
		ch.record(nil, nil, nil, touched)
		return plainApplyArgs(origin, ops), nil
	}
	argv := make([]any, 3, 3+6*len(ops))
	argv[0] = origin
	var applied uint64
	if ch != nil {
		// Batches up to this one had their gr_apply answered before the
		// MGET was sent: the MGET reads what they wrote.
		applied = ch.applied.Load()
		ch.prune(applied)
	}
	read, err := e.cur.Load().rdb.MGet(ctx, names...).Result()
	if err != nil {
		return nil, err
	}
	// cur is each key's record as the batch leaves it, op after op: the
	// record read, then what the fast items before wrote. A key whose op
	// went the general way is unknown from there on (known[j] false): its
	// later ops go the general way too.
	cur := make([][]byte, len(names))
	known := make([]bool, len(names))
	for j, v := range read {
		if s, ok := v.(string); ok {
			cur[j] = []byte(s)
		}
		known[j] = true
		if ch != nil {
			if a, ok := ch.ahead(names[j]); ok {
				cur[j], known[j] = a.rec, a.known
			}
		}
	}
	var ts crdt.Timestamp
	for i, b := range ops {
		c := &cand[i]
		if c.read < 0 || !known[c.read] {
			argv = append(argv, b)
			continue
		}
		old := cur[c.read]
		merged, ok, handled := []byte(nil), false, false
		if c.plain {
			merged, ok, handled = crdt.MergeStringSet(old, &c.set)
		}
		if !handled {
			if c.op == nil {
				if c.op, _ = crdt.UnmarshalOp(b); c.op == nil {
					known[c.read] = false
					argv = append(argv, b)
					continue
				}
			}
			merged, ok = crdt.MergeStringRecord(old, c.op)
		}
		if !ok {
			known[c.read] = false
			argv = append(argv, b)
			continue
		}
		cur[c.read] = merged
		argv = append(argv, casTag, strconv.FormatUint(c.seq, 10), c.key, old, merged, b)
		if ts.Less(c.ts) {
			ts = c.ts
		}
	}
	argv[1], argv[2] = strconv.FormatInt(ts.Ms, 10), strconv.FormatUint(uint64(ts.Lc), 10)
	if ch != nil {
		ch.record(names, cur, known, touched)
	}
	return argv, nil
}

// An ApplyChain applies the batches of one origin in two steps, so that a
// channel with a backlog keeps Redis busy: Prepare builds a batch's call
// (decoding, the fast path's MGET and merges) while the batch before it is
// still being applied by Commit in another goroutine. Prepare is called
// from one goroutine and Commit from one (possibly another), both in batch
// order; every prepared batch is committed or dropped, in that order.
//
// A batch prepared while the one before is in flight may read records that
// the one before is about to change. The chain remembers the records each
// prepared batch leaves behind (inflight) and uses those instead of what MGET
// read, until a Commit says that batch was applied before the next MGET.
// Whatever the chain assumes, gr_apply's compare-and-set is what decides:
// a record that is not what the batch was prepared against sends the op
// the general way, so a wrong guess costs time, never correctness.
type ApplyChain struct {
	e       *Engine
	origin  string
	applied atomic.Uint64 // the last batch committed or dropped
	next    uint64        // the last batch prepared
	// inflight are the records that the prepared batches not yet known
	// to be applied leave behind, a map per batch, oldest first.
	inflight []chainBatch
}

// aheadRecord is a key's record as a prepared batch leaves it; known is
// false when the batch merges an op of the key the general way.
type aheadRecord struct {
	rec   []byte
	known bool
}

type chainBatch struct {
	id   uint64
	recs map[string]aheadRecord
}

// Chain is an ApplyChain as its users see it (an interface, so that tests
// can stand between a receiver and its chain).
type Chain interface {
	Prepare(ctx context.Context, ops [][]byte) (*Prepared, error)
	Commit(ctx context.Context, p *Prepared) (ApplyResult, error)
	Drop(p *Prepared)
}

var _ Chain = (*ApplyChain)(nil)

// Prepared is one batch made ready by ApplyChain.Prepare.
type Prepared struct {
	id   uint64
	argv []any
}

// NewApplyChain returns a chain (an *ApplyChain) for the batches of one
// origin.
func (e *Engine) NewApplyChain(origin string) Chain { return e.newApplyChain(origin) }

func (e *Engine) newApplyChain(origin string) *ApplyChain {
	return &ApplyChain{e: e, origin: origin}
}

// Prepare builds the call that applies ops, to be run by Commit.
func (c *ApplyChain) Prepare(ctx context.Context, ops [][]byte) (*Prepared, error) {
	c.next++
	argv, err := c.e.applyArgs(ctx, c.origin, ops, c)
	if err != nil {
		c.drop(c.next)
		return nil, fmt.Errorf("child: applying ops of %s: %w", c.origin, err)
	}
	return &Prepared{id: c.next, argv: argv}, nil
}

// Commit applies a prepared batch, as Engine.Apply applies a batch.
func (c *ApplyChain) Commit(ctx context.Context, p *Prepared) (ApplyResult, error) {
	defer c.applied.Store(p.id)
	return c.e.applyCall(ctx, c.origin, p.argv)
}

// Drop gives up a prepared batch that will not be committed.
func (c *ApplyChain) Drop(p *Prepared) { c.drop(p.id) }

func (c *ApplyChain) drop(id uint64) {
	if c.applied.Load() < id {
		c.applied.Store(id)
	}
}

// prune forgets what batches up to applied left behind.
func (c *ApplyChain) prune(applied uint64) {
	n := 0
	for n < len(c.inflight) && c.inflight[n].id <= applied {
		n++
	}
	c.inflight = c.inflight[n:]
}

// ahead returns the record that the newest batch in flight that changes
// key leaves behind.
func (c *ApplyChain) ahead(key string) (aheadRecord, bool) {
	for i := len(c.inflight) - 1; i >= 0; i-- {
		if a, ok := c.inflight[i].recs[key]; ok {
			return a, true
		}
	}
	return aheadRecord{}, false
}

// record notes what the batch being prepared leaves behind: the records of
// names (unknown where known is false) and of touched, keys it changes the
// general way (unknown).
func (c *ApplyChain) record(names []string, cur [][]byte, known []bool, touched []string) {
	if c == nil || len(names)+len(touched) == 0 {
		return
	}
	recs := make(map[string]aheadRecord, len(names)+len(touched))
	for j, k := range names {
		recs[k] = aheadRecord{rec: cur[j], known: known[j]}
	}
	for _, k := range touched {
		recs[k] = aheadRecord{}
	}
	c.inflight = append(c.inflight, chainBatch{id: c.next, recs: recs})
}

// plainApplyArgs are gr_apply's arguments without fast items.
func plainApplyArgs(origin string, ops [][]byte) []any {
	argv := make([]any, 3, 3+len(ops))
	argv[0], argv[1], argv[2] = origin, "0", "0"
	for _, b := range ops {
		argv = append(argv, b)
	}
	return argv
}
