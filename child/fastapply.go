package child

import (
	"context"
	"strconv"

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

// applyArgs builds gr_apply's arguments for a batch of one origin.
func (e *Engine) applyArgs(ctx context.Context, origin string, ops [][]byte) ([]any, error) {
	if len(ops) < e.cfg.FastApplyMin {
		return plainApplyArgs(origin, ops), nil
	}
	type fast struct {
		op   *crdt.Op
		read int // index of the key in names
	}
	var (
		cand  = make([]fast, len(ops)) // op nil: not a candidate
		names []string
		index = map[string]int{}
	)
	for i, b := range ops {
		op, err := crdt.UnmarshalOp(b)
		if err != nil || op.ID.Region != origin || len(op.Elems) != 1 || op.Exp != nil || op.Elems[0].Type != crdt.TypeString {
			continue // gr_apply reports a corrupt op
		}
		j, ok := index[op.Key]
		if !ok {
			j = len(names)
			index[op.Key] = j
			names = append(names, op.Key)
		}
		cand[i] = fast{op: op, read: j}
	}
	if len(names) == 0 {
		return plainApplyArgs(origin, ops), nil
	}
	argv := make([]any, 3, 3+len(ops))
	argv[0] = origin
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
	}
	var ts crdt.Timestamp
	for i, b := range ops {
		c := cand[i]
		if c.op == nil || !known[c.read] {
			argv = append(argv, b)
			continue
		}
		old := cur[c.read]
		merged, ok := crdt.MergeStringRecord(old, c.op)
		if !ok {
			known[c.read] = false
			argv = append(argv, b)
			continue
		}
		cur[c.read] = merged
		argv = append(argv, casTag, strconv.FormatUint(c.op.ID.Seq, 10), c.op.Key, old, merged, b)
		if ts.Less(c.op.TS) {
			ts = c.op.TS
		}
	}
	argv[1], argv[2] = strconv.FormatInt(ts.Ms, 10), strconv.FormatUint(uint64(ts.Lc), 10)
	return argv, nil
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
