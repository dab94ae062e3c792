package crdt

import (
	"bytes"
	"flag"
	"fmt"
	"math"
	"os"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"pgregory.net/rapid"
)

// propChecks is how many random histories every rapid property of this
// package runs in a plain `go test` (rapid's own default is 100). An explicit
// -rapid.checks flag or RAPID_CHECKS variable takes precedence; -short
// divides it by 5 as rapid always does.
const propChecks = 1000

// checksExplicit is set when the number of checks was given on the command
// line or in the environment.
var checksExplicit bool

func TestMain(m *testing.M) {
	flag.Parse()
	flag.Visit(func(f *flag.Flag) {
		if f.Name == "rapid.checks" {
			checksExplicit = true
		}
	})
	if _, env := os.LookupEnv("RAPID_CHECKS"); env {
		checksExplicit = true
	}
	if !checksExplicit {
		if err := flag.Set("rapid.checks", strconv.Itoa(propChecks)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
	}
	os.Exit(m.Run())
}

// TestPropChecksDefault guards the TestMain above: without it every property
// would silently run rapid's default of 100 histories.
func TestPropChecksDefault(t *testing.T) {
	f := flag.Lookup("rapid.checks")
	if f == nil {
		t.Fatal("rapid.checks flag not registered")
	}
	if n, _ := strconv.Atoi(f.Value.String()); !checksExplicit && n != propChecks {
		t.Fatalf("rapid.checks = %d, want %d", n, propChecks)
	}
}

// ---------------------------------------------------------------------------
// A simulated deployment: replicas (Stores), the ops they issued, and which
// replica has applied which op.

var testRegions = []string{"fra", "sgp", "iad", "syd", "gru"}

type world struct {
	t        *rapid.T
	fifo     bool // deliver each origin's ops in sequence order
	stores   []*Store
	twins    []*Store // optional: non-GC'd copies fed the same ops
	wire     [][]byte // every op issued, encoded, by global index
	ops      []*Op
	origin   []int
	applied  [][]bool // [replica][op]
	observed [][]bool // [op]: what the origin had applied when it issued it
	cmds     []cmd    // [op]: the command that issued it
	expired  []bool   // [op]: its key had expired at the origin when it was issued
	cut      []bool   // partitioned replicas
	clock    int64
	skew     []int64
	// beforeDeliver, when set, sees every delivery (replica, encoded op)
	// before the replica applies the op.
	beforeDeliver func(d int, op []byte)
	keys          []string
	names         []string
	floor         []Vector // per replica, the vector it last collected tombstones with: ops at or below it are never sent to it again
}

// lazy defers formatting to when rapid actually prints a log line.
type lazy func() string

func (l lazy) String() string { return l() }

func newWorld(t *rapid.T, minReplicas, maxReplicas int, fifo bool) *world {
	t.Helper()
	n := rapid.IntRange(minReplicas, maxReplicas).Draw(t, "replicas")
	nk := rapid.IntRange(2, 4).Draw(t, "keys")
	nf := rapid.IntRange(2, 4).Draw(t, "fields")
	w := &world{t: t, fifo: fifo, clock: 1_000_000}
	for i := range n {
		w.stores = append(w.stores, NewStore(testRegions[i]))
		w.applied = append(w.applied, nil)
		w.cut = append(w.cut, false)
		w.skew = append(w.skew, rapid.Int64Range(-20, 20).Draw(t, "skew"))
		w.floor = append(w.floor, Vector{})
	}
	for i := range nk {
		w.keys = append(w.keys, "k"+strconv.Itoa(i+1))
	}
	for i := range nf {
		w.names = append(w.names, "f"+strconv.Itoa(i+1))
	}
	return w
}

// wall is replica i's wall clock: the global time plus the replica's skew,
// which may jump backwards.
func (w *world) wall(i int) int64 { return w.clock + w.skew[i] }

// write runs a command at replica i and records the op it issued.
func (w *world) write(i int, c cmd) *Op {
	w.t.Helper()
	s := w.stores[i]
	seq, clock := s.Seq, s.Clock
	now := w.wall(i)
	expired := s.Keys[c.key] != nil && s.Keys[c.key].Expired(now)
	op, err := s.Write(c.key, now, c.gen)
	if op == nil {
		if s.Seq != seq || s.Clock != clock {
			w.t.Fatalf("%s %s: no op but sequence or clock consumed", s.Region, c.desc)
		}
		w.t.Logf("%s@%d %s -> no op (%v)", s.Region, now, c.desc, err)
		return nil
	}
	if err != nil {
		w.t.Fatalf("%s %s: op and error %v", s.Region, c.desc, err)
	}
	if op.ID != (OpID{Region: s.Region, Seq: seq + 1}) || op.TS.Region != s.Region || !clockAt(clock).Less(op.TS) {
		w.t.Fatalf("%s %s: bad stamp %v %v after %v/%d", s.Region, c.desc, op.ID, op.TS, clock, seq)
	}
	if op.Key != c.key {
		w.t.Fatalf("%s %s: op for key %q", s.Region, c.desc, op.Key)
	}
	b, err := op.MarshalBinary()
	if err != nil {
		w.t.Fatalf("marshal %v: %v", op.ID, err)
	}
	back, err := UnmarshalOp(b)
	if err != nil {
		w.t.Fatalf("unmarshal %v: %v (%x)", op.ID, err, b)
	}
	if !opsEqual(op, back) {
		w.t.Fatalf("round trip of %v:\n%s\n%s", op.ID, fmtOp(op), fmtOp(back))
	}
	w.t.Logf("%s@%d %s -> %s", s.Region, now, c.desc, lazy(func() string { return fmtOp(op) }))
	j := len(w.ops)
	w.observed = append(w.observed, append([]bool(nil), w.applied[i]...))
	w.wire = append(w.wire, b)
	w.ops = append(w.ops, op)
	w.cmds = append(w.cmds, c)
	w.expired = append(w.expired, expired)
	w.origin = append(w.origin, i)
	for r := range w.applied {
		w.applied[r] = append(w.applied[r], false)
	}
	w.applied[i][j] = true
	if w.twins != nil {
		w.twins[i].Apply(mustDecode(w.t, b))
	}
	return op
}

func clockAt(c Clock) Timestamp { return Timestamp{Ms: c.Ms, Lc: c.Lc} }

func mustDecode(t interface {
	Helper()
	Fatalf(string, ...any)
}, b []byte) *Op {
	t.Helper()
	op, err := UnmarshalOp(b)
	if err != nil {
		t.Fatalf("unmarshal: %v", err)
	}
	return op
}

// deliver applies op j at replica d from its wire bytes (a fresh copy, so no
// state is shared between replicas).
func (w *world) deliver(d, j int) {
	w.t.Helper()
	op := mustDecode(w.t, w.wire[j])
	dup := ""
	if w.applied[d][j] {
		dup = " (again)"
	}
	if w.beforeDeliver != nil {
		w.beforeDeliver(d, w.wire[j])
	}
	c := w.stores[d].Apply(op)
	w.t.Logf("  %s <- %v%s %v", w.stores[d].Region, op.ID, dup, c)
	w.applied[d][j] = true
	if w.twins != nil {
		w.twins[d].Apply(mustDecode(w.t, w.wire[j]))
	}
}

// candidates lists the ops replica d may receive now: not yet applied, not
// across a partition, and in FIFO mode only the next op of each origin.
func (w *world) candidates(d int) []int {
	if w.cut[d] {
		return nil
	}
	var out []int
	head := make(map[int]bool)
	for j := range w.ops {
		o := w.origin[j]
		if w.applied[d][j] || w.cut[o] {
			if w.fifo && !w.applied[d][j] {
				head[o] = true // blocked origin: nothing later from it either
			}
			continue
		}
		if w.fifo {
			if head[o] {
				continue
			}
			head[o] = true
		}
		out = append(out, j)
	}
	return out
}

// deliverOne delivers one random pending op to a random replica.
func (w *world) deliverOne() bool {
	var dests []int
	cands := make([][]int, len(w.stores))
	for d := range w.stores {
		if cands[d] = w.candidates(d); len(cands[d]) > 0 {
			dests = append(dests, d)
		}
	}
	if len(dests) == 0 {
		return false
	}
	d := rapid.SampledFrom(dests).Draw(w.t, "dest")
	w.deliver(d, rapid.SampledFrom(cands[d]).Draw(w.t, "op"))
	return true
}

// duplicate re-delivers an op that replica d already applied.
func (w *world) duplicate() {
	d := rapid.IntRange(0, len(w.stores)-1).Draw(w.t, "dup dest")
	var have []int
	for j := range w.ops {
		if w.applied[d][j] && w.ops[j].ID.Seq > w.floor[d][w.ops[j].ID.Region] {
			have = append(have, j)
		}
	}
	if len(have) > 0 {
		w.deliver(d, rapid.SampledFrom(have).Draw(w.t, "dup op"))
	}
}

// step runs one random action of a history: a local write, deliveries, a
// duplicate, a partition change or a clock jump.
func (w *world) step(kinds []string, restricted bool) {
	w.clock += rapid.Int64Range(0, 3).Draw(w.t, "tick")
	switch a := rapid.IntRange(0, 99).Draw(w.t, "action"); {
	case a < 50:
		i := rapid.IntRange(0, len(w.stores)-1).Draw(w.t, "writer")
		kind := rapid.SampledFrom(kinds).Draw(w.t, "kind")
		w.write(i, drawCmd(w.t, w, kind, restricted))
	case a < 80:
		w.deliverOne()
	case a < 88:
		n := rapid.IntRange(1, 8).Draw(w.t, "burst")
		for range n {
			w.deliverOne()
		}
	case a < 93:
		w.duplicate()
	case a < 97:
		i := rapid.IntRange(0, len(w.stores)-1).Draw(w.t, "partition")
		w.cut[i] = !w.cut[i]
		w.t.Logf("partition %s: %v", w.stores[i].Region, w.cut[i])
	default:
		i := rapid.IntRange(0, len(w.stores)-1).Draw(w.t, "jumper")
		w.skew[i] += rapid.Int64Range(-15, 10).Draw(w.t, "jump")
		w.t.Logf("clock of %s now %d", w.stores[i].Region, w.wall(i))
	}
}

// deliverAll heals every partition and delivers everything everywhere, in
// random order, with some duplicates on the way.
func (w *world) deliverAll() {
	for i := range w.cut {
		w.cut[i] = false
	}
	for w.deliverOne() {
		if rapid.IntRange(0, 19).Draw(w.t, "dup?") == 0 {
			w.duplicate()
		}
	}
}

// checkConverged requires identical visible state at several moments and
// identical encoded state on every replica.
func checkConverged(t *rapid.T, stores []*Store, clock int64, encoded bool) {
	t.Helper()
	for _, now := range []int64{clock - 40, clock, clock + 15, clock + 60, clock + 1_000_000} {
		want := stores[0].Snapshot(now)
		for _, s := range stores[1:] {
			if got := s.Snapshot(now); !reflect.DeepEqual(want, got) {
				t.Fatalf("visible state at %d differs:\n%s: %s\n%s: %s\n\n%s\n%s", now,
					stores[0].Region, fmtSnap(want), s.Region, fmtSnap(got), dumpStore(stores[0]), dumpStore(s))
			}
		}
	}
	if !encoded {
		return
	}
	want := encodeStore(stores[0])
	for _, s := range stores[1:] {
		if got := encodeStore(s); !bytes.Equal(want, got) {
			t.Fatalf("encoded state differs:\n%s\n%s", dumpStore(stores[0]), dumpStore(s))
		}
	}
}

// ---------------------------------------------------------------------------
// Commands.

// cmd is one client command at a replica: the key, a description for the
// log, the generator and, for the restricted alphabet, what the naive model
// needs to know about it.
type cmd struct {
	key  string
	desc string
	gen  func(k *Key, st Stamp) (*Op, error)
	ref  refOp
}

var allKinds = []string{
	"SET", "INCRBY", "INCRBYFLOAT", "APPEND", "DEL", "EXPIRE", "PERSIST",
	"HSET", "HSETNX", "HDEL", "HINCRBY", "HINCRBYFLOAT",
	"SADD", "SREM", "ZADD", "ZINCRBY", "ZREM",
}

// refKinds is the restricted alphabet of the naive reference model.
var refKinds = []string{"SET", "INCRBY", "DEL", "EXPIRE", "PERSIST", "HSET", "HDEL", "HINCRBY", "SADD", "SREM", "ZADD", "ZINCRBY", "ZREM"}

var (
	testVals    = []string{"1", "2", "10", "-3", "0", "x", "yy", "1.5", "007", ""}
	refVals     = []string{"1", "5", "-2", "x"}
	testScores  = []float64{-2, -1, 0, 0.5, 1, 2, 3, 10}
	testFloats  = []float64{0.1, 0.25, -1.5, 3, 1e-3, 2.5e10, -0.1}
	testZIncrs  = []float64{1, -1, 0.5, 2, -2.5, 0.1}
	bigIncrs    = []int64{1 << 52, -(1 << 52), MaxSafeInt, -MaxSafeInt, MaxSafeInt + 1}
	expireConds = []ExpireCond{ExpireAlways, ExpireNX, ExpireXX, ExpireGT, ExpireLT}
)

func drawNames(t *rapid.T, w *world, label string) []string {
	return rapid.SliceOfN(rapid.SampledFrom(w.names), 1, 2).Draw(t, label)
}

func drawCmd(t *rapid.T, w *world, kind string, restricted bool) cmd {
	return makeCmd(t, w, kind, rapid.SampledFrom(w.keys).Draw(t, "key"), restricted)
}

// makeCmd draws the arguments of a command of the given kind. Deadlines are
// drawn relative to the writer's wall time, so they are computed in the
// generator from st.Now.
func makeCmd(t *rapid.T, w *world, kind, key string, restricted bool) cmd {
	c := cmd{key: key}
	drawInt := func() int64 {
		if restricted {
			return rapid.Int64Range(-3, 5).Draw(t, "incr")
		}
		if rapid.IntRange(0, 9).Draw(t, "big?") == 0 {
			return rapid.SampledFrom(bigIncrs).Draw(t, "big incr")
		}
		return rapid.Int64Range(-5, 5).Draw(t, "incr")
	}
	drawVal := func() string {
		if restricted {
			return rapid.SampledFrom(refVals).Draw(t, "val")
		}
		return rapid.SampledFrom(testVals).Draw(t, "val")
	}
	switch kind {
	case "SET":
		v := drawVal()
		if restricted {
			px := rapid.IntRange(0, 3).Draw(t, "px?") == 0
			rel := rapid.Int64Range(-3, 60).Draw(t, "set px")
			c.desc = fmt.Sprintf("SET %s %q", key, v)
			c.ref = refOp{kind: refSet, t: TypeString, val: v, ttl: ttlClear}
			if px {
				c.desc += fmt.Sprintf(" PX %d", rel)
				c.ref.ttl = ttlSet
				if rel <= 0 {
					c.ref = refOp{kind: refDel} // expires at once: a delete
				}
			}
			c.gen = func(k *Key, st Stamp) (*Op, error) {
				var o SetOpts
				if px {
					o.Deadline = st.Now + rel
				}
				op, _, _, _, err := k.Set(key, v, o, st)
				return op, err
			}
			return c
		}
		var o SetOpts
		switch rapid.IntRange(0, 5).Draw(t, "set cond") {
		case 0:
			o.NX = true
		case 1:
			o.XX = true
		}
		ttl := rapid.IntRange(0, 3).Draw(t, "set ttl")
		rel := rapid.Int64Range(-3, 60).Draw(t, "set px")
		o.KeepTTL = ttl == 2
		o.Get = rapid.IntRange(0, 4).Draw(t, "set get") == 0
		c.desc = fmt.Sprintf("SET %s %q %+v ttl=%d rel=%d", key, v, o, ttl, rel)
		c.gen = func(k *Key, st Stamp) (*Op, error) {
			o := o
			if ttl == 1 {
				o.Deadline = st.Now + rel
			}
			op, _, _, _, err := k.Set(key, v, o, st)
			return op, err
		}
	case "INCRBY":
		d := drawInt()
		c.desc = fmt.Sprintf("INCRBY %s %d", key, d)
		c.gen = func(k *Key, st Stamp) (*Op, error) {
			op, _, err := k.IncrBy(key, d, st)
			return op, err
		}
		c.ref = refOp{kind: refIncr, t: TypeString, di: d}
	case "INCRBYFLOAT":
		d := rapid.SampledFrom(testFloats).Draw(t, "float")
		c.desc = fmt.Sprintf("INCRBYFLOAT %s %v", key, d)
		c.gen = func(k *Key, st Stamp) (*Op, error) {
			op, _, err := k.IncrByFloat(key, d, st)
			return op, err
		}
	case "APPEND":
		s := rapid.SampledFrom([]string{"a", "1", ""}).Draw(t, "suffix")
		c.desc = fmt.Sprintf("APPEND %s %q", key, s)
		c.gen = func(k *Key, st Stamp) (*Op, error) {
			op, _, err := k.Append(key, s, st)
			return op, err
		}
	case "DEL":
		c.desc = "DEL " + key
		c.gen = func(k *Key, st Stamp) (*Op, error) {
			op, _ := k.Del(key, st)
			return op, nil
		}
		c.ref = refOp{kind: refDel}
	case "EXPIRE":
		rel := rapid.Int64Range(-3, 60).Draw(t, "expire in")
		cond := rapid.SampledFrom(expireConds).Draw(t, "expire cond")
		if restricted {
			cond = ExpireAlways
		}
		c.ref = refOp{ttl: ttlSet}
		if rel <= 0 {
			c.ref = refOp{kind: refDel}
		}
		c.desc = fmt.Sprintf("PEXPIRE %s %d cond=%d", key, rel, cond)
		c.gen = func(k *Key, st Stamp) (*Op, error) {
			op, _ := k.Expire(key, st.Now+rel, cond, st)
			return op, nil
		}
	case "PERSIST":
		c.desc = "PERSIST " + key
		c.ref = refOp{ttl: ttlPersist}
		c.gen = func(k *Key, st Stamp) (*Op, error) {
			op, _ := k.Persist(key, st)
			return op, nil
		}
	case "HSET", "HSETNX":
		var fs []Field
		n := 1
		if !restricted && kind == "HSET" {
			n = rapid.IntRange(1, 2).Draw(t, "hset n")
		}
		for range n {
			fs = append(fs, Field{Name: rapid.SampledFrom(w.names).Draw(t, "field"), Val: drawVal()})
		}
		c.desc = fmt.Sprintf("%s %s %v", kind, key, fs)
		if kind == "HSETNX" {
			c.gen = func(k *Key, st Stamp) (*Op, error) {
				op, _, err := k.HSetNX(key, fs[0], st)
				return op, err
			}
			break
		}
		c.gen = func(k *Key, st Stamp) (*Op, error) {
			op, _, err := k.HSet(key, fs, st)
			return op, err
		}
		c.ref = refOp{kind: refSet, t: TypeHash, name: fs[0].Name, val: fs[0].Val}
	case "HDEL", "SREM", "ZREM":
		names := []string{rapid.SampledFrom(w.names).Draw(t, "name")}
		if !restricted {
			names = drawNames(t, w, "names")
		}
		c.desc = fmt.Sprintf("%s %s %v", kind, key, names)
		typ := map[string]Type{"HDEL": TypeHash, "SREM": TypeSet, "ZREM": TypeZSet}[kind]
		c.gen = func(k *Key, st Stamp) (*Op, error) {
			var op *Op
			var err error
			switch typ {
			case TypeHash:
				op, _, err = k.HDel(key, names, st)
			case TypeSet:
				op, _, err = k.SRem(key, names, st)
			default:
				op, _, err = k.ZRem(key, names, st)
			}
			return op, err
		}
		c.ref = refOp{kind: refRm, t: typ, name: names[0]}
	case "HINCRBY":
		f, d := rapid.SampledFrom(w.names).Draw(t, "field"), drawInt()
		c.desc = fmt.Sprintf("HINCRBY %s %s %d", key, f, d)
		c.gen = func(k *Key, st Stamp) (*Op, error) {
			op, _, err := k.HIncrBy(key, f, d, st)
			return op, err
		}
		c.ref = refOp{kind: refIncr, t: TypeHash, name: f, di: d}
	case "HINCRBYFLOAT":
		f, d := rapid.SampledFrom(w.names).Draw(t, "field"), rapid.SampledFrom(testFloats).Draw(t, "float")
		c.desc = fmt.Sprintf("HINCRBYFLOAT %s %s %v", key, f, d)
		c.gen = func(k *Key, st Stamp) (*Op, error) {
			op, _, err := k.HIncrByFloat(key, f, d, st)
			return op, err
		}
	case "SADD":
		ms := []string{rapid.SampledFrom(w.names).Draw(t, "member")}
		if !restricted {
			ms = drawNames(t, w, "members")
		}
		c.desc = fmt.Sprintf("SADD %s %v", key, ms)
		c.gen = func(k *Key, st Stamp) (*Op, error) {
			op, _, err := k.SAdd(key, ms, st)
			return op, err
		}
		c.ref = refOp{kind: refSet, t: TypeSet, name: ms[0]}
	case "ZADD":
		var o ZAddOpts
		var ms []Field
		n := 1
		if !restricted {
			switch rapid.IntRange(0, 3).Draw(t, "zadd cond") {
			case 1:
				o.NX = true
			case 2:
				o.XX = true
			}
			if !o.NX {
				switch rapid.IntRange(0, 3).Draw(t, "zadd cmp") {
				case 1:
					o.GT = true
				case 2:
					o.LT = true
				}
			}
			o.CH = rapid.Bool().Draw(t, "zadd ch")
			o.Incr = rapid.IntRange(0, 3).Draw(t, "zadd incr") == 0
			if !o.Incr {
				n = rapid.IntRange(1, 2).Draw(t, "zadd n")
			}
		}
		for range n {
			score := rapid.SampledFrom(testScores).Draw(t, "score")
			if restricted {
				score = float64(rapid.IntRange(-2, 3).Draw(t, "int score"))
			}
			ms = append(ms, Field{Name: rapid.SampledFrom(w.names).Draw(t, "member"), Score: score})
		}
		c.desc = fmt.Sprintf("ZADD %s %+v %v", key, o, ms)
		c.gen = func(k *Key, st Stamp) (*Op, error) {
			op, _, _, _, err := k.ZAdd(key, o, ms, st)
			return op, err
		}
		c.ref = refOp{kind: refSet, t: TypeZSet, name: ms[0].Name, score: ms[0].Score}
	case "ZINCRBY":
		m := rapid.SampledFrom(w.names).Draw(t, "member")
		d := rapid.SampledFrom(testZIncrs).Draw(t, "zincr")
		if restricted {
			d = float64(rapid.IntRange(-2, 3).Draw(t, "int zincr"))
		}
		c.desc = fmt.Sprintf("ZINCRBY %s %v %s", key, d, m)
		c.gen = func(k *Key, st Stamp) (*Op, error) {
			op, _, err := k.ZIncrBy(key, m, d, st)
			return op, err
		}
		c.ref = refOp{kind: refIncr, t: TypeZSet, name: m, df: d}
	default:
		panic("unknown command kind " + kind)
	}
	return c
}

// ---------------------------------------------------------------------------
// Property: random histories converge.

// TestPropConvergence runs random histories of every supported write on a
// small hot keyspace across 3-5 replicas. Ops reach other replicas in random
// order (also out of order per origin), some twice, some only after a
// partition heals; clocks are skewed and jump backwards. After everything is
// delivered, every replica shows the same state and encodes to the same bytes.
func TestPropConvergence(t *testing.T) {
	t.Parallel()
	rapid.Check(t, func(t *rapid.T) {
		w := newWorld(t, 3, 5, false)
		for range rapid.IntRange(30, 150).Draw(t, "steps") {
			w.step(allKinds, false)
		}
		w.deliverAll()
		checkConverged(t, w.stores, w.clock, true)
	})
}

// TestPropConvergenceFIFO is the same with each origin's ops delivered in
// order, as JetStream does; partitions and duplicates remain.
func TestPropConvergenceFIFO(t *testing.T) {
	t.Parallel()
	rapid.Check(t, func(t *rapid.T) {
		w := newWorld(t, 3, 5, true)
		for range rapid.IntRange(30, 150).Draw(t, "steps") {
			w.step(allKinds, false)
		}
		w.deliverAll()
		checkConverged(t, w.stores, w.clock, true)
	})
}

// ---------------------------------------------------------------------------
// Property: every op type is idempotent and commutes with concurrent ops.

// TestPropIdempotentCommutative issues, after a random history, an op of
// every type at one replica and a concurrent op of a random type at another
// (on the same key, mostly), and applies them to every replica in both orders
// and with duplicates: the encoded state must not depend on it. Each history
// is tried with every op type, from the same starting point.
func TestPropIdempotentCommutative(t *testing.T) {
	t.Parallel()
	rapid.Check(t, func(t *rapid.T) {
		w := newWorld(t, 3, 3, false)
		for range rapid.IntRange(0, 25).Draw(t, "steps") {
			w.step(allKinds, false)
		}
		for _, kind := range allKinds {
			checkCommute(t, w.clone(), kind)
		}
	})
}

// clone returns an independent copy of the world, to branch a history.
func (w *world) clone() *world {
	c := *w
	c.stores = nil
	for _, s := range w.stores {
		c.stores = append(c.stores, cloneStore(s))
	}
	c.wire = slices.Clone(w.wire)
	c.ops = slices.Clone(w.ops)
	c.origin = slices.Clone(w.origin)
	c.cmds = slices.Clone(w.cmds)
	c.expired = slices.Clone(w.expired)
	c.cut = slices.Clone(w.cut)
	c.skew = slices.Clone(w.skew)
	c.floor = slices.Clone(w.floor)
	c.applied, c.observed = nil, nil
	for _, a := range w.applied {
		c.applied = append(c.applied, slices.Clone(a))
	}
	for _, o := range w.observed {
		c.observed = append(c.observed, slices.Clone(o))
	}
	return &c
}

// checkCommute issues an op of the given kind at replica 0 and a
// concurrent one at replica 1, and applies them in several orders.
func checkCommute(t *rapid.T, w *world, kind string) {
	t.Helper()
	t.Logf("-- %s", kind)
	o1 := w.writeKind(0, kind)
	key := rapid.SampledFrom(w.keys).Draw(t, "key2")
	if o1 != nil && rapid.IntRange(0, 3).Draw(t, "same key?") > 0 {
		key = o1.Key
	}
	o2 := w.write(1, makeCmd(t, w, rapid.SampledFrom(allKinds).Draw(t, "kind2"), key, false))
	var ops []*Op
	keys := map[string]bool{}
	for _, op := range []*Op{o1, o2} {
		if op != nil {
			b, _ := op.MarshalBinary()
			ops = append(ops, mustDecode(t, b))
			keys[op.Key] = true
		}
	}
	if len(ops) == 0 {
		return
	}
	// apply runs ops (by index) on a copy of the keys concerned of a store
	// and returns the encoded result.
	apply := func(base *Store, seq ...int) (*Store, []byte) {
		s := NewStore(base.Region)
		for k := range keys {
			if bk := base.Keys[k]; bk != nil {
				s.Keys[k] = bk.Clone()
			}
		}
		for _, i := range seq {
			if i < len(ops) {
				s.Apply(ops[i])
			}
		}
		return s, encodeStore(s)
	}
	for _, base := range w.stores {
		_, once := apply(base, 0)
		if _, twice := apply(base, 0, 0); !bytes.Equal(once, twice) {
			t.Fatalf("%s %s: applying %v twice differs from once", kind, base.Region, ops[0].ID)
		}
		s1, ab := apply(base, 0, 1)
		for _, seq := range [][]int{{1, 0}, {1, 0, 0, 1}} {
			if s2, got := apply(base, seq...); !bytes.Equal(ab, got) {
				t.Fatalf("%s %s: order %v differs from [0 1]:\n%s\n%s", kind, base.Region, seq, dumpStore(s1), dumpStore(s2))
			}
		}
	}
}

// writeKind issues an op of the given kind at replica i, trying several
// keys and arguments, and if none applies (a condition or the key's type
// prevents it) preparing a key for it first.
func (w *world) writeKind(i int, kind string) *Op {
	w.t.Helper()
	for range 8 {
		if op := w.write(i, drawCmd(w.t, w, kind, false)); op != nil {
			return op
		}
	}
	key := w.keys[0]
	w.write(i, makeCmd(w.t, w, "DEL", key, false))
	plain := func(gen func(k *Key, st Stamp) (*Op, error)) {
		w.write(i, cmd{key: key, desc: "prepare " + key, gen: gen})
	}
	switch kind {
	case "SET", "APPEND", "DEL", "EXPIRE":
		plain(func(k *Key, st Stamp) (*Op, error) {
			op, _, _, _, err := k.Set(key, "1", SetOpts{}, st)
			return op, err
		})
	case "PERSIST":
		plain(func(k *Key, st Stamp) (*Op, error) {
			op, _, _, _, err := k.Set(key, "1", SetOpts{Deadline: st.Now + 50}, st)
			return op, err
		})
	case "HDEL":
		plain(func(k *Key, st Stamp) (*Op, error) {
			op, _, err := k.HSet(key, []Field{{Name: w.names[0], Val: "1"}, {Name: w.names[1], Val: "2"}}, st)
			return op, err
		})
	case "SREM":
		plain(func(k *Key, st Stamp) (*Op, error) {
			op, _, err := k.SAdd(key, w.names, st)
			return op, err
		})
	case "ZREM", "ZADD":
		plain(func(k *Key, st Stamp) (*Op, error) {
			op, _, _, _, err := k.ZAdd(key, ZAddOpts{}, []Field{{Name: w.names[0], Score: 1}, {Name: w.names[1], Score: 2}}, st)
			return op, err
		})
	}
	for range 16 {
		c := makeCmd(w.t, w, kind, key, false)
		if kind == "HDEL" || kind == "SREM" || kind == "ZREM" {
			c = makeCmd(w.t, w, kind, key, true) // one of the names prepared
		}
		if op := w.write(i, c); op != nil {
			return op
		}
	}
	w.t.Logf("no %s op could be issued", kind)
	return nil
}

func cloneStore(s *Store) *Store {
	c := &Store{Region: s.Region, Clock: s.Clock, Seq: s.Seq, Applied: s.Applied.Clone(), Keys: make(map[string]*Key, len(s.Keys))}
	for n, k := range s.Keys {
		c.Keys[n] = k.Clone()
	}
	return c
}

// ---------------------------------------------------------------------------
// Property: a naive reference model agrees with the real one.

type refKind uint8

const (
	refNone refKind = iota
	refSet          // writes a register entry of (t, name) and replaces what it observed of it
	refIncr         // adds to (t, name)
	refDel          // removes everything it observed of the key
	refRm           // removes what it observed of (t, name)
)

// refTTL says what a command does to the key's TTL.
type refTTL uint8

const (
	ttlKeep    refTTL = iota
	ttlClear          // SET without a TTL: removes the TTLs it observed
	ttlSet            // EXPIRE, SET PX: replaces the TTLs it observed with its deadline
	ttlPersist        // PERSIST: replaces them with "no TTL", which beats any TTL
)

// refOp is what the naive model knows of a command of the restricted
// alphabet. A string SET replaces everything it observed of the key, of
// any type; a DEL removes everything it observed, TTLs included.
type refOp struct {
	kind  refKind
	ttl   refTTL
	t     Type
	name  string
	val   string
	score float64
	di    int64
	df    float64
}

func (o refOp) removes(t Type, name string) bool {
	switch o.kind {
	case refDel:
		return true
	case refSet:
		return o.t == TypeString || (o.t == t && o.name == name)
	case refRm:
		return o.t == t && o.name == name
	}
	return false
}

// refVisible computes the visible state of the ops in the set in at wall
// time now directly from the rules, with no CRDT state at all: a write is
// visible unless an op that observed it (it was applied at that op's origin
// when the op was issued) removes its element; an element's value is its
// latest visible register write (by HLC timestamp) plus its visible
// increments; a key shows the first type, in precedence order, that has a
// visible element. A TTL is visible unless an op that observed it writes or
// clears the TTL; the key's deadline is the longest visible one, none if a
// PERSIST is visible, and the key is absent once it passes. A write to a
// key that had expired at its origin removes everything it observed first.
func refVisible(w *world, in []bool, now int64) map[string]Visible {
	type elemKey struct {
		key  string
		t    Type
		name string
	}
	// removedBy reports whether op k removes what it observed of op j's
	// element (elem) or TTL (!elem).
	removedBy := func(k, j int, elem bool) bool {
		if !in[k] || k == j || w.cmds[k].key != w.cmds[j].key || j >= len(w.observed[k]) || !w.observed[k][j] {
			return false
		}
		ko, jo := w.cmds[k].ref, w.cmds[j].ref
		if w.expired[k] || ko.kind == refDel {
			return true
		}
		if elem {
			return ko.removes(jo.t, jo.name)
		}
		return ko.ttl != ttlKeep
	}
	deadlines := make(map[string]int64)
	for j := range w.ops {
		o := w.cmds[j].ref
		if !in[j] || (o.ttl != ttlSet && o.ttl != ttlPersist) {
			continue
		}
		dead := false
		for k := range w.ops {
			if removedBy(k, j, false) {
				dead = true
				break
			}
		}
		key := w.cmds[j].key
		switch {
		case dead:
		case o.ttl == ttlPersist || deadlines[key] == Persist:
			deadlines[key] = Persist
		default:
			deadlines[key] = max(deadlines[key], w.ops[j].Exp.Deadline)
		}
	}
	live := make(map[elemKey][]int)
	for j := range w.ops {
		o := w.cmds[j].ref
		if !in[j] || (o.kind != refSet && o.kind != refIncr) {
			continue
		}
		dead := false
		for k := range w.ops {
			if removedBy(k, j, true) {
				dead = true
				break
			}
		}
		if !dead {
			ek := elemKey{w.cmds[j].key, o.t, o.name}
			live[ek] = append(live[ek], j)
		}
	}
	type value struct {
		str   string
		score float64
	}
	vals := make(map[elemKey]value)
	for ek, js := range live {
		win, incrs := -1, false
		var di int64
		var df float64
		for _, j := range js {
			switch o := w.cmds[j].ref; o.kind {
			case refSet:
				if win < 0 || w.ops[win].TS.Less(w.ops[j].TS) {
					win = j
				}
			case refIncr:
				incrs = true
				di += o.di
				df += o.df
			}
		}
		var v value
		if win >= 0 {
			v.str, v.score = w.cmds[win].ref.val, w.cmds[win].ref.score
		}
		if incrs {
			base := "0"
			if win >= 0 {
				base = v.str
			}
			if n, err := strconv.ParseInt(base, 10, 64); err == nil {
				v.str = strconv.FormatInt(n+di, 10)
			}
			v.score += df
		}
		vals[ek] = v
	}
	out := make(map[string]Visible)
	for _, key := range w.keys {
		d := deadlines[key]
		if d == Persist {
			d = 0
		}
		if d != 0 && now >= d {
			continue
		}
		for _, t := range []Type{TypeString, TypeHash, TypeSet, TypeZSet} {
			vis := Visible{Deadline: d}
			for ek, v := range vals {
				if ek.key != key || ek.t != t {
					continue
				}
				vis.Type = t
				switch t {
				case TypeString:
					vis.Str = v.str
				case TypeHash:
					vis.Fields = append(vis.Fields, Field{Name: ek.name, Val: v.str})
				case TypeSet:
					vis.Members = append(vis.Members, ek.name)
				case TypeZSet:
					vis.Fields = append(vis.Fields, Field{Name: ek.name, Score: v.score})
				}
			}
			if vis.Type == TypeNone {
				continue
			}
			sort.Strings(vis.Members)
			sort.Slice(vis.Fields, func(i, j int) bool {
				a, b := vis.Fields[i], vis.Fields[j]
				if a.Score != b.Score {
					return a.Score < b.Score
				}
				return a.Name < b.Name
			})
			out[key] = vis
			break
		}
	}
	return out
}

// closed reports whether a set of ops contains everything each of its ops
// observed (the naive model describes exactly such sets).
func (w *world) closed(in []bool) bool {
	for j := range w.ops {
		if !in[j] {
			continue
		}
		for k, ok := range w.observed[j] {
			if ok && !in[k] {
				return false
			}
		}
	}
	return true
}

// TestPropReferenceModel checks the real model against the naive one on a
// restricted alphabet (SET with or without PX, INCRBY, DEL, PEXPIRE, PERSIST,
// HSET, HDEL, HINCRBY, SADD, SREM, ZADD, ZINCRBY, ZREM; integer values and
// scores, one field or member per command), with per-origin FIFO delivery,
// partitions and duplicates: at every replica whose applied set is causally
// closed during the history, and at every replica at the end, at several
// moments (before and after deadlines).
func TestPropReferenceModel(t *testing.T) {
	t.Parallel()
	rapid.Check(t, func(t *rapid.T) {
		w := newWorld(t, 3, 5, true)
		check := func(i int) {
			t.Helper()
			for _, now := range []int64{w.clock - 20, w.clock, w.clock + 20, w.clock + 1_000_000} {
				want := refVisible(w, w.applied[i], now)
				if got := w.stores[i].Snapshot(now); !reflect.DeepEqual(want, got) {
					t.Fatalf("%s at %d differs from the reference model:\nreal: %s\nref:  %s\n%s", w.stores[i].Region, now, fmtSnap(got), fmtSnap(want), dumpStore(w.stores[i]))
				}
			}
		}
		for range rapid.IntRange(20, 120).Draw(t, "steps") {
			if rapid.IntRange(0, 9).Draw(t, "check?") == 0 {
				for i := range w.stores {
					if w.closed(w.applied[i]) {
						check(i)
					}
				}
				continue
			}
			w.step(refKinds, true)
		}
		w.deliverAll()
		for i := range w.stores {
			check(i)
		}
	})
}

// ---------------------------------------------------------------------------
// Property: tombstone collection.

// minApplied returns the pointwise minimum of the replicas' applied vectors
// (contiguous, since GC histories deliver each origin in order), every
// region present.
func (w *world) minApplied() Vector {
	var vs []Vector
	for _, s := range w.stores {
		v := Vector{}
		for _, o := range w.stores {
			v[o.Region] = s.Applied[o.Region]
		}
		vs = append(vs, v)
	}
	return Min(vs...)
}

// TestPropGC runs FIFO histories in which replicas collect tombstones at
// random moments with the pointwise minimum of all applied vectors, and are
// then sent again ops above that minimum (a consumer restarting from an older
// position). Every replica has a twin that never collects and applies the same
// ops in the same order: collection must never change the visible state, and
// all replicas converge.
func TestPropGC(t *testing.T) {
	t.Parallel()
	rapid.Check(t, func(t *rapid.T) {
		w := newWorld(t, 3, 4, true)
		for _, s := range w.stores {
			w.twins = append(w.twins, NewStore(s.Region))
		}
		same := func(i int, what string) {
			t.Helper()
			for _, now := range []int64{w.clock, w.clock + 30, w.clock + 1_000_000} {
				a, b := w.stores[i].Snapshot(now), w.twins[i].Snapshot(now)
				if !reflect.DeepEqual(a, b) {
					t.Fatalf("%s %s at %d: collected %s, twin %s\n%s\n%s", w.stores[i].Region, what, now, fmtSnap(a), fmtSnap(b), dumpStore(w.stores[i]), dumpStore(w.twins[i]))
				}
			}
		}
		for range rapid.IntRange(20, 120).Draw(t, "steps") {
			if rapid.IntRange(0, 7).Draw(t, "gc?") > 0 {
				w.step(allKinds, false)
				continue
			}
			i := rapid.IntRange(0, len(w.stores)-1).Draw(t, "collector")
			low := w.minApplied()
			w.stores[i].GC(low)
			w.floor[i] = low
			t.Logf("GC %s %v", w.stores[i].Region, low)
			same(i, "after GC")
			for j, op := range w.ops {
				if w.applied[i][j] && op.ID.Seq > low[op.ID.Region] && rapid.Bool().Draw(t, "replay?") {
					w.deliver(i, j)
				}
			}
			same(i, "after replay")
		}
		w.deliverAll()
		for i := range w.stores {
			same(i, "at the end")
		}
		checkConverged(t, w.stores, w.clock, false)
		checkConverged(t, w.twins, w.clock, true)
		low := w.minApplied()
		for i, s := range w.stores {
			s.GC(low)
			w.twins[i].GC(low)
			same(i, "after the final GC")
		}
		// Collected replicas may differ in tombstones they had collected
		// and received again later (a delayed remove carrying an old
		// removal context); only the visible state must agree.
		checkConverged(t, append(append([]*Store(nil), w.stores...), w.twins...), w.clock, false)
		checkConverged(t, w.twins, w.clock, true)
	})
}

// ---------------------------------------------------------------------------
// Property: the hybrid logical clock.

// TestPropHLC drives a clock with a wall clock that stands still, runs
// backwards and jumps, and with timestamps observed from other regions: every
// reading is strictly later than everything issued or observed before, its
// physical part is the maximum of the wall clock and that history, and a
// reading taken after observing a timestamp orders after it whatever the
// region names.
func TestPropHLC(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		region := rapid.SampledFrom(testRegions).Draw(t, "region")
		var c Clock
		var high Timestamp // the greatest (Ms, Lc) issued or observed
		var observed []Timestamp
		wall := rapid.Int64Range(0, 1000).Draw(t, "wall")
		for range rapid.IntRange(1, 60).Draw(t, "steps") {
			wall += rapid.Int64Range(-30, 30).Draw(t, "drift")
			if rapid.IntRange(0, 2).Draw(t, "observe?") == 0 {
				o := Timestamp{
					Ms:     wall + rapid.Int64Range(-50, 50).Draw(t, "remote skew"),
					Lc:     rapid.Uint32Range(0, 3).Draw(t, "remote lc"),
					Region: rapid.SampledFrom(testRegions).Draw(t, "remote region"),
				}
				c.Observe(o)
				observed = append(observed, o)
				if (Timestamp{Ms: high.Ms, Lc: high.Lc}).Less(Timestamp{Ms: o.Ms, Lc: o.Lc}) {
					high = Timestamp{Ms: o.Ms, Lc: o.Lc}
				}
				continue
			}
			ts := c.Now(region, wall)
			if ts.Region != region {
				t.Fatalf("region %q", ts.Region)
			}
			if !(Timestamp{Ms: high.Ms, Lc: high.Lc}).Less(Timestamp{Ms: ts.Ms, Lc: ts.Lc}) {
				t.Fatalf("%v does not follow %v", ts, high)
			}
			if ts.Ms != max(wall, high.Ms) {
				t.Fatalf("physical part %d, wall %d, history %d", ts.Ms, wall, high.Ms)
			}
			for _, o := range observed {
				if !o.Less(ts) || ts.Compare(o) != 1 {
					t.Fatalf("%v observed before %v", o, ts)
				}
			}
			high = Timestamp{Ms: ts.Ms, Lc: ts.Lc}
		}
	})
}

// TestPropTimestampOrder checks that Compare is a total order that breaks
// ties on the region and equals only identical timestamps.
func TestPropTimestampOrder(t *testing.T) {
	gen := rapid.Custom(func(t *rapid.T) Timestamp {
		return Timestamp{
			Ms:     rapid.Int64Range(0, 3).Draw(t, "ms"),
			Lc:     rapid.Uint32Range(0, 2).Draw(t, "lc"),
			Region: rapid.SampledFrom(testRegions[:3]).Draw(t, "region"),
		}
	})
	rapid.Check(t, func(t *rapid.T) {
		a, b, c := gen.Draw(t, "a"), gen.Draw(t, "b"), gen.Draw(t, "c")
		if a.Compare(b) != -b.Compare(a) {
			t.Fatalf("not antisymmetric: %v %v", a, b)
		}
		if (a.Compare(b) == 0) != (a == b) {
			t.Fatalf("equal compare for different timestamps %v %v", a, b)
		}
		if a.Less(b) && b.Less(c) && !a.Less(c) {
			t.Fatalf("not transitive: %v %v %v", a, b, c)
		}
		if a.Ms == b.Ms && a.Lc == b.Lc && a.Region != b.Region && a.Less(b) != (a.Region < b.Region) {
			t.Fatalf("tie not broken by region: %v %v", a, b)
		}
		if a.Ms != b.Ms && a.Less(b) != (a.Ms < b.Ms) {
			t.Fatalf("physical part does not dominate: %v %v", a, b)
		}
	})
}

// TestPropObservedWriteWins: whatever the clocks, a SET made at one region
// after applying another region's SET wins over it everywhere.
func TestPropObservedWriteWins(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		a, b := NewStore("sgp"), NewStore("fra")
		if rapid.Bool().Draw(t, "swap") {
			a, b = b, a
		}
		wa := rapid.Int64Range(0, 1000).Draw(t, "wall a")
		wb := rapid.Int64Range(0, 1000).Draw(t, "wall b")
		set := func(s *Store, v string, now int64) *Op {
			t.Helper()
			op, err := s.Write("k", now, func(k *Key, st Stamp) (*Op, error) {
				op, _, _, _, err := k.Set("k", v, SetOpts{}, st)
				return op, err
			})
			if err != nil || op == nil {
				t.Fatalf("SET: %v", err)
			}
			return op
		}
		for range rapid.IntRange(0, 3).Draw(t, "earlier") {
			set(a, "old", wa)
		}
		first := set(a, "first", wa)
		b.Apply(first)
		second := set(b, "second", wb)
		if !first.TS.Less(second.TS) {
			t.Fatalf("%v does not follow %v", second.TS, first.TS)
		}
		a.Apply(second)
		for _, s := range []*Store{a, b} {
			if v, _ := s.Key("k").Get(0); v != "second" {
				t.Fatalf("%s shows %q", s.Region, v)
			}
		}
	})
}

// ---------------------------------------------------------------------------
// Helpers: comparison, encoding and printing of states and ops.

// encodeStore encodes every key of a store with the state record format: the
// string element with the key's expiry register, then every element of the
// collections in name order.
func encodeStore(s *Store) []byte {
	var b bytes.Buffer
	for _, name := range s.KeyNames() {
		k := s.Keys[name]
		fmt.Fprintf(&b, "%q:", name)
		str := k.Str
		if str == nil {
			str = &Elem{}
		}
		b.Write(MarshalState(TypeString, str, &k.Exp))
		for _, c := range []struct {
			t Type
			m map[string]*Elem
		}{{TypeHash, k.Hash}, {TypeSet, k.Members}, {TypeZSet, k.ZSet}} {
			for _, n := range sortedKeys(c.m) {
				fmt.Fprintf(&b, "|%d %q:", c.t, n)
				b.Write(MarshalState(c.t, c.m[n], nil))
			}
		}
		b.WriteByte('\n')
	}
	return b.Bytes()
}

func dumpElem(e *Elem) string {
	var parts []string
	for _, en := range e.Entries {
		parts = append(parts, fmt.Sprintf("%v@%d.%d=%q/%v", en.Dot, en.Ms, en.Lc, en.Val, en.Score))
	}
	for _, r := range sortedKeys(e.Ctr) {
		c := e.Ctr[r]
		parts = append(parts, fmt.Sprintf("ctr %s{%d s%d %d %v}", r, c.Seq, c.Start, c.I, c.F))
	}
	for _, r := range sortedKeys(e.Rm) {
		c := e.Rm[r]
		parts = append(parts, fmt.Sprintf("rm %s{%d s%d %d %v}", r, c.Seq, c.Start, c.I, c.F))
	}
	return "[" + strings.Join(parts, " ") + "]"
}

func dumpStore(s *Store) string {
	var b strings.Builder
	fmt.Fprintf(&b, "store %s seq=%d clock=%v applied=%v\n", s.Region, s.Seq, s.Clock, s.Applied)
	for _, name := range s.KeyNames() {
		k := s.Keys[name]
		fmt.Fprintf(&b, "  %s exp=%v rm=%v\n", name, k.Exp.Entries, k.Exp.Rm)
		if k.Str != nil {
			fmt.Fprintf(&b, "    str %s\n", dumpElem(k.Str))
		}
		for _, c := range []struct {
			t string
			m map[string]*Elem
		}{{"hash", k.Hash}, {"set", k.Members}, {"zset", k.ZSet}} {
			for _, n := range sortedKeys(c.m) {
				fmt.Fprintf(&b, "    %s %s %s\n", c.t, n, dumpElem(c.m[n]))
			}
		}
	}
	return b.String()
}

func fmtSnap(m map[string]Visible) string {
	var parts []string
	for _, k := range sortedKeys(m) {
		v := m[k]
		parts = append(parts, fmt.Sprintf("%s=%v %q %v %v exp=%d", k, v.Type, v.Str, v.Fields, v.Members, v.Deadline))
	}
	return "{" + strings.Join(parts, "; ") + "}"
}

func fmtOp(op *Op) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%v@%d.%d %q", op.ID, op.TS.Ms, op.TS.Lc, op.Key)
	for _, eo := range op.Elems {
		fmt.Fprintf(&b, " <%v %q k%d", eo.Type, eo.Name, eo.Kind)
		for _, r := range sortedKeys(eo.Rm) {
			c := eo.Rm[r]
			fmt.Fprintf(&b, " rm %s{%d s%d %d %v}", r, c.Seq, c.Start, c.I, c.F)
		}
		switch eo.Kind {
		case KindSet:
			fmt.Fprintf(&b, " val=%q score=%v", eo.Val, eo.Score)
		case KindIncr:
			fmt.Fprintf(&b, " run{s%d %d %v}", eo.Run.Start, eo.Run.I, eo.Run.F)
		}
		b.WriteString(">")
	}
	if op.Exp != nil {
		fmt.Fprintf(&b, " exp{rm %v deadline %d}", op.Exp.Rm, op.Exp.Deadline)
	}
	return b.String()
}

func floatEq(a, b float64) bool { return math.Float64bits(a) == math.Float64bits(b) }

func runsEqual(a, b map[string]Run) bool {
	if len(a) != len(b) {
		return false
	}
	for r, x := range a {
		y, ok := b[r]
		if !ok || x.Seq != y.Seq || x.Start != y.Start || x.I != y.I || !floatEq(x.F, y.F) {
			return false
		}
	}
	return true
}

func vectorsEqual(a, b Vector) bool {
	if len(a) != len(b) {
		return false
	}
	for r, s := range a {
		if t, ok := b[r]; !ok || s != t {
			return false
		}
	}
	return true
}

// opsEqual compares ops field by field, floats by their bits (so a NaN that
// survives a round trip compares equal) and empty maps equal to nil ones.
func opsEqual(a, b *Op) bool {
	if a.ID != b.ID || a.TS != b.TS || a.Key != b.Key || len(a.Elems) != len(b.Elems) || (a.Exp == nil) != (b.Exp == nil) {
		return false
	}
	for i := range a.Elems {
		x, y := &a.Elems[i], &b.Elems[i]
		if x.Type != y.Type || x.Name != y.Name || x.Kind != y.Kind || x.Val != y.Val || !floatEq(x.Score, y.Score) ||
			!runsEqual(x.Rm, y.Rm) || x.Run.Seq != y.Run.Seq || x.Run.Start != y.Run.Start || x.Run.I != y.Run.I || !floatEq(x.Run.F, y.Run.F) {
			return false
		}
	}
	return a.Exp == nil || (a.Exp.Deadline == b.Exp.Deadline && vectorsEqual(a.Exp.Rm, b.Exp.Rm))
}
