package child

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/globalreplica/globalreplica/crdt"
)

// The conflict log in database 1: every conflict the apply path resolves
// (gr_apply, apply.lua) is pushed, newest first, onto the list keyConflicts,
// trimmed to ConflictLogSize records, and counted by kind in the hash
// keyConflictKinds. Ops that meet no conflict write neither.
const (
	keyConflicts     = "conflicts"       // list of MessagePack conflict records, newest first
	keyConflictKinds = "conflicts:kinds" // hash: kind -> conflicts resolved since the region began
	// ConflictLogSize is how many recent conflicts a region keeps.
	ConflictLogSize = 1000
)

// Conflict is one conflict that the CRDT rules resolved when a remote op was
// applied in a region: which writes met, which side won and why.
type Conflict struct {
	Region string    `json:"region,omitempty"` // the region that resolved it (set by the manager)
	Time   time.Time `json:"time"`             // when this region applied the op
	Key    string    `json:"key"`
	Type   string    `json:"type"`            // string, hash, set, zset (none: the key is not visible)
	Field  string    `json:"field,omitempty"` // the hash field or member
	// Kind is one of crdt's conflict kinds: lww, set-incr, remove, ttl, type.
	Kind string `json:"kind"`
	Op   string `json:"op"` // OpID of the remote op that met the conflict (origin:seq)
	// Winner is the region whose write shows: the latest register write
	// (lww), the longest TTL or PERSIST (ttl); for remove and set-incr the
	// regions whose unobserved writes survived; for type the visible type.
	Winner string `json:"winner,omitempty"`
	// Regions are the regions whose writes met.
	Regions []string `json:"regions,omitempty"`
	// Won and Lost are the register writes of an lww conflict.
	Won  *ConflictSide  `json:"won,omitempty"`
	Lost []ConflictSide `json:"lost,omitempty"`
	// DeadlineMs is the effective deadline after a ttl conflict (Unix ms;
	// 0 when PERSIST won).
	DeadlineMs int64 `json:"deadline_ms,omitempty"`
	// Why says in words which side won and why.
	Why string `json:"why"`
}

// ConflictSide is one register write of an lww conflict.
type ConflictSide struct {
	Region string `json:"region"`
	Ms     int64  `json:"ms"` // HLC timestamp: physical ms and logical counter
	Lc     uint32 `json:"lc"`
	Value  string `json:"value"` // the value or score, cut to 40 bytes
}

// conflictRec is the record apply.lua writes (see conflict_rec in lib.lua).
type conflictRec struct {
	At       int64    `msgpack:"at"`
	Key      string   `msgpack:"key"`
	Type     int      `msgpack:"type"`
	Field    string   `msgpack:"field"`
	Kind     string   `msgpack:"kind"`
	Origin   string   `msgpack:"origin"`
	Seq      uint64   `msgpack:"seq"`
	Win      []any    `msgpack:"win"`
	Lose     [][]any  `msgpack:"lose"`
	Regions  []string `msgpack:"regions"`
	Types    []int    `msgpack:"types"`
	Deadline int64    `msgpack:"deadline"`
	Persist  bool     `msgpack:"persist"`
}

// Conflicts returns up to n of the region's most recent conflicts, newest
// first (n <= 0: all that are kept, at most ConflictLogSize).
func (e *Engine) Conflicts(ctx context.Context, n int) ([]Conflict, error) {
	if n <= 0 || n > ConflictLogSize {
		n = ConflictLogSize
	}
	raw, err := e.meta.LRange(ctx, keyConflicts, 0, int64(n-1)).Result()
	if err != nil {
		return nil, fmt.Errorf("child: reading the conflict log: %w", err)
	}
	out := make([]Conflict, 0, len(raw))
	for _, r := range raw {
		c, err := decodeConflict([]byte(r))
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// ConflictCounts returns how many conflicts of each kind the region has
// resolved since its state began (the log keeps only the recent ones).
func (e *Engine) ConflictCounts(ctx context.Context) (map[string]int64, error) {
	m, err := e.meta.HGetAll(ctx, keyConflictKinds).Result()
	if err != nil {
		return nil, fmt.Errorf("child: reading the conflict counts: %w", err)
	}
	out := make(map[string]int64, len(m))
	for k, v := range m {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("child: conflict count %s=%q: %w", k, v, err)
		}
		out[k] = n
	}
	return out, nil
}

func decodeConflict(b []byte) (Conflict, error) {
	var r conflictRec
	if err := msgpack.Unmarshal(b, &r); err != nil {
		return Conflict{}, fmt.Errorf("%w: conflict record: %w", ErrCorruptState, err)
	}
	c := Conflict{
		Time:  time.UnixMilli(r.At).UTC(),
		Key:   r.Key,
		Type:  crdt.Type(r.Type).String(),
		Field: r.Field,
		Kind:  r.Kind,
		Op:    crdt.OpID{Region: r.Origin, Seq: r.Seq}.String(),
	}
	switch r.Kind {
	case crdt.ConflictLWW:
		w := side(r.Win)
		c.Won, c.Winner = &w, w.Region
		c.Regions = []string{w.Region}
		for _, l := range r.Lose {
			s := side(l)
			c.Lost = append(c.Lost, s)
			c.Regions = append(c.Regions, s.Region)
		}
		sort.Strings(c.Regions)
		var lost []string
		for _, l := range c.Lost {
			lost = append(lost, fmt.Sprintf("%s's write at %s", l.Region, hlcString(l.Ms, l.Lc)))
		}
		why := "later HLC timestamp: last writer wins"
		for _, l := range c.Lost {
			if l.Ms == w.Ms && l.Lc == w.Lc {
				why = "equal HLC timestamps: the greater region id wins"
			}
		}
		c.Why = fmt.Sprintf("%s's write at %s won over %s (%s)", w.Region, hlcString(w.Ms, w.Lc), strings.Join(lost, ", "), why)
	case crdt.ConflictSetIncr:
		c.Regions = append([]string{r.Origin}, r.Regions...)
		c.Winner = strings.Join(r.Regions, ",")
		c.Why = fmt.Sprintf("unobserved increments added on top: the write of %s had not observed the increments of %s, which are added to its value",
			r.Origin, strings.Join(r.Regions, ", "))
	case crdt.ConflictRemove:
		c.Regions = append([]string{r.Origin}, r.Regions...)
		c.Winner = strings.Join(r.Regions, ",")
		c.Why = fmt.Sprintf("concurrent write survived: observed-remove (the remove by %s had not observed the writes of %s)",
			r.Origin, strings.Join(r.Regions, ", "))
	case crdt.ConflictTTL:
		c.Regions = r.Regions
		if len(r.Win) > 0 {
			c.Winner, _ = r.Win[0].(string)
		}
		if r.Persist {
			c.Why = fmt.Sprintf("PERSIST beats every TTL: PERSIST by %s, the key does not expire", c.Winner)
		} else {
			c.DeadlineMs = r.Deadline
			c.Why = fmt.Sprintf("the longest TTL wins: effective deadline %s (set by %s)",
				time.UnixMilli(r.Deadline).UTC().Format(time.RFC3339Nano), c.Winner)
		}
	case crdt.ConflictType:
		var names []string
		for _, t := range r.Types {
			names = append(names, crdt.Type(t).String())
		}
		if len(names) > 0 {
			c.Winner = names[0]
		}
		c.Regions = []string{r.Origin}
		c.Why = fmt.Sprintf("concurrent writes of different types (%s): %s is visible (precedence string > hash > set > zset)",
			strings.Join(names, ", "), c.Winner)
	default:
		c.Why = r.Kind
	}
	return c, nil
}

// side reads an lww record side: [region, ms, lc, value].
func side(a []any) ConflictSide {
	var s ConflictSide
	if len(a) < 4 {
		return s
	}
	s.Region, _ = a[0].(string)
	s.Ms = anyInt(a[1])
	s.Lc = uint32(anyInt(a[2]))
	switch v := a[3].(type) {
	case string:
		s.Value = v
	case []byte:
		s.Value = string(v)
	default:
		s.Value = fmt.Sprint(v)
	}
	return s
}

// anyInt reads a MessagePack number of any width.
func anyInt(v any) int64 {
	switch x := v.(type) {
	case int8:
		return int64(x)
	case int16:
		return int64(x)
	case int32:
		return int64(x)
	case int64:
		return x
	case uint8:
		return int64(x)
	case uint16:
		return int64(x)
	case uint32:
		return int64(x)
	case uint64:
		return int64(x)
	case float32:
		return int64(x)
	case float64:
		return int64(x)
	}
	return 0
}

// hlcString renders an HLC timestamp: wall time in ms and logical counter.
func hlcString(ms int64, lc uint32) string {
	return fmt.Sprintf("%s+%d", time.UnixMilli(ms).UTC().Format("2006-01-02T15:04:05.000Z"), lc)
}
