package crdt

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// The worked examples of docs/semantics.md, one per conflict rule. Each is
// a two-region history (sgp and fra) in redis-cli terms: every command's
// reply is checked, and so is what each region reads before and after they
// exchange their writes. The test renders every example as the Markdown
// table the document shows and requires the document to contain exactly
// that table, between <!-- example: name --> and <!-- /example --> markers;
// `go test ./crdt -run TestSemanticsDoc -rewrite` regenerates them.

var rewrite = flag.Bool("rewrite", false, "rewrite the example tables of docs/semantics.md")

const semanticsDoc = "../docs/semantics.md"

// semStep is one row of an example: a command at one region (with the
// reply it must get), or an exchange of writes, or a tombstone collection.
type semStep struct {
	at     int64  // wall time in ms (before the region's skew)
	region string // "sgp" or "fra"; empty for sync and collect
	cmd    string
	reply  string
	sync   string            // "both", "sgp→fra" or "fra→sgp"
	confl  map[string]string // conflicts each receiving region reports ("" for none)
	gc     bool              // collect tombstones in both regions
}

type semCase struct {
	name  string
	skew  map[string]int64 // per region, ms its wall clock is off
	steps []semStep
}

func cmdAt(at int64, region, cmd, reply string) semStep {
	return semStep{at: at, region: region, cmd: cmd, reply: reply}
}

// bothAt is a command run at both regions with the same reply.
func bothAt(at int64, cmd, reply string) []semStep {
	return []semStep{cmdAt(at, "sgp", cmd, reply), cmdAt(at, "fra", cmd, reply)}
}

func exchange(at int64, dir string, sgpConfl, fraConfl string) semStep {
	return semStep{at: at, sync: dir, confl: map[string]string{"sgp": sgpConfl, "fra": fraConfl}}
}

func collect(at int64) semStep { return semStep{at: at, gc: true} }

func semSteps(parts ...any) []semStep {
	var out []semStep
	for _, p := range parts {
		switch p := p.(type) {
		case semStep:
			out = append(out, p)
		case []semStep:
			out = append(out, p...)
		}
	}
	return out
}

var semCases = []semCase{
	{name: "set-set", steps: semSteps(
		cmdAt(1000, "sgp", "SET k a", "OK"),
		cmdAt(1001, "fra", "SET k b", "OK"),
		cmdAt(1500, "sgp", "GET k", `"a"`),
		cmdAt(1500, "fra", "GET k", `"b"`),
		exchange(2000, "both", "lww", "lww"),
		bothAt(2000, "GET k", `"b"`),
	)},
	{name: "set-set-tie", steps: semSteps(
		cmdAt(1000, "sgp", "SET k a", "OK"),
		cmdAt(1000, "fra", "SET k b", "OK"),
		exchange(2000, "both", "lww", "lww"),
		bothAt(2000, "GET k", `"a"`),
	)},
	{name: "observed-write-wins", skew: map[string]int64{"fra": -5000}, steps: semSteps(
		cmdAt(10000, "sgp", "SET k a", "OK"),
		exchange(11000, "sgp→fra", "", ""),
		cmdAt(12000, "fra", "SET k b", "OK"),
		exchange(13000, "both", "", ""),
		bothAt(13000, "GET k", `"b"`),
	)},
	{name: "append-append", steps: semSteps(
		cmdAt(1000, "sgp", "SET k a", "OK"),
		exchange(2000, "both", "", ""),
		cmdAt(3000, "sgp", "APPEND k b", "(integer) 2"),
		cmdAt(3001, "fra", "APPEND k c", "(integer) 2"),
		exchange(4000, "both", "lww", "lww"),
		bothAt(4000, "GET k", `"ac"`),
	)},
	{name: "set-incr", steps: semSteps(
		cmdAt(1000, "sgp", "SET k 10", "OK"),
		exchange(2000, "both", "", ""),
		cmdAt(3000, "sgp", "SET k 100", "OK"),
		cmdAt(3000, "fra", "INCRBY k 5", "(integer) 15"),
		cmdAt(3500, "sgp", "GET k", `"100"`),
		cmdAt(3500, "fra", "GET k", `"15"`),
		exchange(4000, "both", "", "set-incr"),
		bothAt(4000, "GET k", `"105"`),
	)},
	{name: "incr-incr", steps: semSteps(
		cmdAt(1000, "sgp", "INCR k", "(integer) 1"),
		cmdAt(1000, "fra", "INCRBY k 5", "(integer) 5"),
		cmdAt(1001, "sgp", "INCR k", "(integer) 2"),
		exchange(2000, "both", "", ""),
		bothAt(2000, "GET k", `"7"`),
		cmdAt(3000, "fra", "DECRBY k 10", "(integer) -3"),
		exchange(4000, "both", "", ""),
		bothAt(4000, "GET k", `"-3"`),
	)},
	{name: "incrbyfloat", steps: semSteps(
		cmdAt(1000, "sgp", "INCRBYFLOAT k 0.1", `"0.1"`),
		cmdAt(1000, "fra", "INCRBYFLOAT k 0.2", `"0.2"`),
		cmdAt(1001, "sgp", "INCRBYFLOAT k 0.3", `"0.4"`),
		exchange(2000, "both", "", ""),
		bothAt(2000, "GET k", `"0.6000000000000001"`),
	)},
	{name: "counter-range", steps: semSteps(
		cmdAt(1000, "sgp", "SET k 9007199254740990", "OK"),
		cmdAt(1001, "sgp", "INCR k", "(integer) 9007199254740991"),
		cmdAt(1002, "sgp", "INCR k", "(error) ERR increment or decrement would overflow"),
		cmdAt(1003, "sgp", "GET k", `"9007199254740991"`),
		cmdAt(1004, "fra", "SET k -9007199254740991", "OK"),
		cmdAt(1005, "fra", "DECR k", "(error) ERR increment or decrement would overflow"),
		cmdAt(1006, "fra", "INCRBY n 9007199254740992", "(error) ERR increment or decrement would overflow"),
	)},
	{name: "hset-hdel", steps: semSteps(
		cmdAt(1000, "sgp", "HSET h f 1 g 1", "(integer) 2"),
		exchange(2000, "both", "", ""),
		cmdAt(3000, "sgp", "HDEL h f g", "(integer) 2"),
		cmdAt(3000, "fra", "HSET h f 2", "(integer) 0"),
		cmdAt(3500, "sgp", "HGETALL h", "(empty array)"),
		cmdAt(3500, "fra", "HGETALL h", `1) "f" 2) "2" 3) "g" 4) "1"`),
		exchange(4000, "both", "", "remove"),
		bothAt(4000, "HGETALL h", `1) "f" 2) "2"`),
	)},
	{name: "hincrby-hincrby", steps: semSteps(
		cmdAt(1000, "sgp", "HSET h views 10", "(integer) 1"),
		exchange(2000, "both", "", ""),
		cmdAt(3000, "sgp", "HINCRBY h views 1", "(integer) 11"),
		cmdAt(3000, "fra", "HINCRBY h views 2", "(integer) 12"),
		cmdAt(3000, "fra", "HSET h title x", "(integer) 1"),
		exchange(4000, "both", "", ""),
		bothAt(4000, "HGETALL h", `1) "title" 2) "x" 3) "views" 4) "13"`),
	)},
	{name: "hset-del", steps: semSteps(
		cmdAt(1000, "sgp", "HSET h a 1 b 1", "(integer) 2"),
		exchange(2000, "both", "", ""),
		cmdAt(3000, "sgp", "DEL h", "(integer) 1"),
		cmdAt(3000, "fra", "HSET h b 2", "(integer) 0"),
		exchange(4000, "both", "", "remove"),
		bothAt(4000, "HGETALL h", `1) "b" 2) "2"`),
	)},
	{name: "sadd-srem", steps: semSteps(
		cmdAt(1000, "sgp", "SADD s x y", "(integer) 2"),
		exchange(2000, "both", "", ""),
		cmdAt(3000, "sgp", "SREM s x y", "(integer) 2"),
		cmdAt(3000, "fra", "SADD s x", "(integer) 0"),
		cmdAt(3500, "sgp", "SMEMBERS s", "(empty array)"),
		cmdAt(3500, "fra", "SMEMBERS s", `1) "x" 2) "y"`),
		exchange(4000, "both", "", "remove"),
		bothAt(4000, "SMEMBERS s", `1) "x"`),
	)},
	{name: "zadd-zadd", steps: semSteps(
		cmdAt(1000, "sgp", "ZADD z 1 m", "(integer) 1"),
		cmdAt(1001, "fra", "ZADD z 2 m", "(integer) 1"),
		exchange(2000, "both", "lww", "lww"),
		bothAt(2000, "ZRANGE z 0 -1 WITHSCORES", `1) "m" 2) "2"`),
	)},
	{name: "zrem-zincrby", steps: semSteps(
		cmdAt(1000, "sgp", "ZADD z 10 m", "(integer) 1"),
		exchange(2000, "both", "", ""),
		cmdAt(3000, "sgp", "ZREM z m", "(integer) 1"),
		cmdAt(3000, "fra", "ZINCRBY z 5 m", `"15"`),
		cmdAt(3500, "sgp", "ZRANGE z 0 -1 WITHSCORES", "(empty array)"),
		cmdAt(3500, "fra", "ZRANGE z 0 -1 WITHSCORES", `1) "m" 2) "15"`),
		exchange(4000, "both", "", "remove"),
		bothAt(4000, "ZRANGE z 0 -1 WITHSCORES", `1) "m" 2) "5"`),
	)},
	{name: "expire-expire", steps: semSteps(
		cmdAt(10000, "sgp", "SET k v", "OK"),
		exchange(11000, "both", "", ""),
		cmdAt(20000, "sgp", "EXPIRE k 100", "(integer) 1"),
		cmdAt(20000, "fra", "EXPIRE k 50", "(integer) 1"),
		cmdAt(20000, "sgp", "TTL k", "(integer) 100"),
		cmdAt(20000, "fra", "TTL k", "(integer) 50"),
		exchange(21000, "both", "ttl", "ttl"),
		bothAt(21000, "TTL k", "(integer) 99"),
		bothAt(121000, "GET k", "(nil)"),
	)},
	{name: "persist-expire", steps: semSteps(
		cmdAt(10000, "sgp", "SET k v EX 100", "OK"),
		exchange(11000, "both", "", ""),
		cmdAt(20000, "sgp", "PERSIST k", "(integer) 1"),
		cmdAt(20000, "fra", "EXPIRE k 500", "(integer) 1"),
		exchange(21000, "both", "ttl", "ttl"),
		bothAt(21000, "TTL k", "(integer) -1"),
	)},
	{name: "set-expire", steps: semSteps(
		cmdAt(10000, "sgp", "SET k v EX 50", "OK"),
		exchange(11000, "both", "", ""),
		cmdAt(20000, "sgp", "SET k w", "OK"),
		cmdAt(20000, "fra", "EXPIRE k 100", "(integer) 1"),
		cmdAt(20000, "sgp", "TTL k", "(integer) -1"),
		cmdAt(20000, "fra", "TTL k", "(integer) 100"),
		exchange(21000, "both", "", ""),
		bothAt(21000, "GET k", `"w"`),
		bothAt(21000, "TTL k", "(integer) 99"),
	)},
	{name: "del-set", steps: semSteps(
		cmdAt(1000, "sgp", "SET k 1", "OK"),
		exchange(2000, "both", "", ""),
		cmdAt(3000, "sgp", "DEL k", "(integer) 1"),
		cmdAt(3000, "fra", "SET k 2", "OK"),
		exchange(4000, "both", "", "remove"),
		bothAt(4000, "GET k", `"2"`),
	)},
	{name: "del-incr", steps: semSteps(
		cmdAt(1000, "sgp", "SET k 1", "OK"),
		exchange(2000, "both", "", ""),
		cmdAt(3000, "sgp", "DEL k", "(integer) 1"),
		cmdAt(3000, "fra", "INCR k", "(integer) 2"),
		exchange(4000, "both", "", "remove"),
		bothAt(4000, "GET k", `"1"`),
	)},
	{name: "type-conflict", steps: semSteps(
		cmdAt(1000, "sgp", "SET k s", "OK"),
		cmdAt(1000, "fra", "SADD k m", "(integer) 1"),
		exchange(2000, "both", "type", "type"),
		bothAt(2000, "TYPE k", "string"),
		bothAt(2000, "GET k", `"s"`),
		cmdAt(3000, "fra", "SADD k n", "(error) WRONGTYPE Operation against a key holding the wrong kind of value"),
		cmdAt(3000, "sgp", "DEL k", "(integer) 1"),
		exchange(4000, "both", "", ""),
		bothAt(4000, "TYPE k", "none"),
	)},
	{name: "type-hidden", steps: semSteps(
		cmdAt(1000, "sgp", "SET k s", "OK"),
		cmdAt(1000, "fra", "SADD k m", "(integer) 1"),
		exchange(2000, "sgp→fra", "", "type"),
		cmdAt(2000, "fra", "TYPE k", "string"),
		cmdAt(3000, "sgp", "DEL k", "(integer) 1"),
		exchange(4000, "both", "", ""),
		bothAt(4000, "TYPE k", "set"),
		bothAt(4000, "SMEMBERS k", `1) "m"`),
	)},
	{name: "expired-write", steps: semSteps(
		cmdAt(1000, "sgp", "SET k 5 EX 10", "OK"),
		exchange(2000, "both", "", ""),
		bothAt(10999, "GET k", `"5"`),
		cmdAt(12000, "fra", "INCR k", "(integer) 1"),
		cmdAt(12000, "sgp", "GET k", "(nil)"),
		exchange(13000, "both", "", ""),
		bothAt(13000, "GET k", `"1"`),
		bothAt(13000, "TTL k", "(integer) -1"),
	)},
	{name: "tombstones", steps: semSteps(
		cmdAt(1000, "sgp", "SADD s a b", "(integer) 2"),
		exchange(2000, "both", "", ""),
		cmdAt(3000, "fra", "SREM s a", "(integer) 1"),
		exchange(4000, "both", "", ""),
		bothAt(4000, "TOMBSTONES s", "(integer) 1"),
		collect(5000),
		bothAt(5000, "TOMBSTONES s", "(integer) 0"),
		cmdAt(6000, "sgp", "DEL s", "(integer) 1"),
		exchange(7000, "both", "", ""),
		bothAt(7000, "TOMBSTONES s", "(integer) 1"),
		collect(8000),
		bothAt(8000, "EXISTS s", "(integer) 0"),
		bothAt(8000, "TOMBSTONES s", "(integer) 0"),
	)},
	{name: "counter-tombstones", steps: semSteps(
		cmdAt(1000, "sgp", "INCR c", "(integer) 1"),
		exchange(2000, "both", "", ""),
		cmdAt(3000, "fra", "DEL c", "(integer) 1"),
		exchange(4000, "both", "", ""),
		collect(5000),
		bothAt(5000, "TOMBSTONES c", "(integer) 1"),
		cmdAt(6000, "sgp", "INCR c", "(integer) 1"),
		exchange(7000, "both", "", ""),
		collect(8000),
		bothAt(8000, "TOMBSTONES c", "(integer) 0"),
		bothAt(8000, "GET c", `"1"`),
	)},
}

// semRegion is one region of an example: its store, its clock skew and the
// ops it issued.
type semRegion struct {
	s    *Store
	skew int64
	ops  []*Op
	sent int // how many of ops the other region has received
}

func TestSemantics(t *testing.T) {
	for _, c := range semCases {
		t.Run(c.name, func(t *testing.T) { runSemCase(t, c) })
	}
}

// semRun is what running an example produced: every op issued, and for each
// exchange step the regions that received at least one write.
type semRun struct {
	ops      []*Op
	received map[int][]string
}

// runSemCase runs an example, checking every reply and conflict report.
func runSemCase(t testing.TB, c semCase) semRun {
	t.Helper()
	out := semRun{received: map[int][]string{}}
	rs := map[string]*semRegion{}
	for _, name := range []string{"sgp", "fra"} {
		rs[name] = &semRegion{s: NewStore(name), skew: c.skew[name]}
	}
	for i, st := range c.steps {
		switch {
		case st.gc:
			low := Min(Vector{"sgp": rs["sgp"].s.Applied["sgp"], "fra": rs["sgp"].s.Applied["fra"]}, rs["fra"].s.Applied)
			for _, r := range rs {
				r.s.GC(low)
			}
		case st.sync != "":
			var dirs [][2]string
			switch st.sync {
			case "both":
				dirs = [][2]string{{"sgp", "fra"}, {"fra", "sgp"}}
			case "sgp→fra":
				dirs = [][2]string{{"sgp", "fra"}}
			case "fra→sgp":
				dirs = [][2]string{{"fra", "sgp"}}
			default:
				t.Fatalf("step %d: sync %q", i, st.sync)
			}
			for _, d := range dirs {
				from, to := rs[d[0]], rs[d[1]]
				var kinds []string
				for _, op := range from.ops[from.sent:] {
					for _, k := range to.s.Apply(roundTrip(t, op)) {
						if !slices.Contains(kinds, k) {
							kinds = append(kinds, k)
						}
					}
				}
				if len(from.ops) > from.sent {
					out.received[i] = append(out.received[i], d[1])
				}
				from.sent = len(from.ops)
				slices.Sort(kinds)
				if got := strings.Join(kinds, ","); got != st.confl[d[1]] {
					t.Errorf("step %d: %s reported conflicts %q, want %q", i, d[1], got, st.confl[d[1]])
				}
			}
			if st.sync == "both" {
				a, b := rs["sgp"].s, rs["fra"].s
				for _, now := range []int64{st.at, st.at + 1_000_000} {
					if sa, sb := a.Snapshot(now), b.Snapshot(now); fmtSnap(sa) != fmtSnap(sb) {
						t.Errorf("step %d: not converged at %d:\nsgp %s\nfra %s", i, now, fmtSnap(sa), fmtSnap(sb))
					}
				}
				if !bytes.Equal(encodeStore(a), encodeStore(b)) {
					t.Errorf("step %d: encoded states differ:\n%s\n%s", i, dumpStore(a), dumpStore(b))
				}
			}
		default:
			r := rs[st.region]
			if r == nil {
				t.Fatalf("step %d: region %q", i, st.region)
			}
			got, op := execCmd(t, r.s, st.at+r.skew, st.cmd)
			if op != nil {
				r.ops = append(r.ops, op)
				out.ops = append(out.ops, op)
			}
			if got != st.reply {
				t.Errorf("step %d: %s> %s = %s, want %s", i, st.region, st.cmd, got, st.reply)
			}
		}
	}
	return out
}

func roundTrip(t testing.TB, op *Op) *Op {
	t.Helper()
	b, err := op.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	back, err := UnmarshalOp(b)
	if err != nil {
		t.Fatal(err)
	}
	return back
}

// execCmd runs one redis-cli style command at a store at wall time now and
// returns the reply as redis-cli prints it, and the op a write issued.
func execCmd(t testing.TB, s *Store, now int64, line string) (string, *Op) {
	t.Helper()
	f := strings.Fields(line)
	name, key, args := strings.ToUpper(f[0]), "", []string(nil)
	if len(f) > 1 {
		key, args = f[1], f[2:]
	}
	num := func(s string) int64 {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		return n
	}
	flt := func(s string) float64 {
		x, err := strconv.ParseFloat(s, 64)
		if err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		return x
	}
	var reply string
	write := func(gen func(k *Key, st Stamp) (*Op, error)) *Op {
		op, err := s.Write(key, now, gen)
		if err != nil {
			reply = "(error) " + err.Error()
		}
		return op
	}
	integer := func(n int) string { return "(integer) " + strconv.Itoa(n) }
	k := s.Keys[key]
	if k == nil {
		k = &Key{}
	}
	switch name {
	case "GET":
		if v, ok := k.Get(now); ok {
			return strconv.Quote(v), nil
		}
		if k.Type(now) != TypeNone {
			return "(error) " + ErrWrongType.Error(), nil
		}
		return "(nil)", nil
	case "TYPE":
		return k.Type(now).String(), nil
	case "EXISTS":
		if k.Type(now) == TypeNone {
			return integer(0), nil
		}
		return integer(1), nil
	case "TTL", "PTTL":
		if k.Type(now) == TypeNone {
			return integer(-2), nil
		}
		d := k.Exp.Deadline()
		if d == 0 {
			return integer(-1), nil
		}
		if name == "PTTL" {
			return integer(int(d - now)), nil
		}
		return integer(int((d - now + 500) / 1000)), nil
	case "HGETALL":
		var out []string
		for _, fv := range k.HGetAll(now) {
			out = append(out, fv.Name, fv.Val)
		}
		return fmtArray(out), nil
	case "SMEMBERS":
		return fmtArray(k.SMembers(now)), nil
	case "ZRANGE": // ZRANGE key 0 -1 WITHSCORES
		var out []string
		for _, m := range k.ZRange(now) {
			out = append(out, m.Name, FormatFloat(m.Score))
		}
		return fmtArray(out), nil
	case "TOMBSTONES": // not a command: the removal entries the state holds
		n := len(k.Exp.Rm)
		for _, e := range allElems(k) {
			n += len(e.Rm)
		}
		return integer(n), nil
	case "SET":
		var o SetOpts
		for i := 0; i < len(args)-1; i++ {
			switch strings.ToUpper(args[i+1]) {
			case "EX":
				o.Deadline = now + 1000*num(args[i+2])
				i++
			case "PX":
				o.Deadline = now + num(args[i+2])
				i++
			case "NX":
				o.NX = true
			case "XX":
				o.XX = true
			case "KEEPTTL":
				o.KeepTTL = true
			}
		}
		var written bool
		op := write(func(k *Key, st Stamp) (*Op, error) {
			op, _, _, w, err := k.Set(key, args[0], o, st)
			written = w
			return op, err
		})
		if !written {
			return orReply(&reply, func() string { return "(nil)" }), op
		}
		return orReply(&reply, func() string { return "OK" }), op
	case "INCR", "DECR", "INCRBY", "DECRBY":
		d := int64(1)
		if len(args) > 0 {
			d = num(args[0])
		}
		if strings.HasPrefix(name, "DECR") {
			d = -d
		}
		var v int64
		op := write(func(k *Key, st Stamp) (*Op, error) {
			op, n, err := k.IncrBy(key, d, st)
			v = n
			return op, err
		})
		return orReply(&reply, func() string { return "(integer) " + strconv.FormatInt(v, 10) }), op
	case "INCRBYFLOAT":
		var v string
		op := write(func(k *Key, st Stamp) (*Op, error) {
			op, s, err := k.IncrByFloat(key, flt(args[0]), st)
			v = s
			return op, err
		})
		return orReply(&reply, func() string { return strconv.Quote(v) }), op
	case "APPEND":
		var n int
		op := write(func(k *Key, st Stamp) (*Op, error) {
			op, l, err := k.Append(key, args[0], st)
			n = l
			return op, err
		})
		return orReply(&reply, func() string { return integer(n) }), op
	case "DEL":
		var ok bool
		op := write(func(k *Key, st Stamp) (*Op, error) {
			op, existed := k.Del(key, st)
			ok = existed
			return op, nil
		})
		return integer(b2i(ok)), op
	case "EXPIRE", "PEXPIRE":
		ms := num(args[0])
		if name == "EXPIRE" {
			ms *= 1000
		}
		var ok bool
		op := write(func(k *Key, st Stamp) (*Op, error) {
			op, set := k.Expire(key, st.Now+ms, ExpireAlways, st)
			ok = set
			return op, nil
		})
		return integer(b2i(ok)), op
	case "PERSIST":
		var ok bool
		op := write(func(k *Key, st Stamp) (*Op, error) {
			op, had := k.Persist(key, st)
			ok = had
			return op, nil
		})
		return integer(b2i(ok)), op
	case "HSET":
		var fs []Field
		for i := 0; i+1 < len(args); i += 2 {
			fs = append(fs, Field{Name: args[i], Val: args[i+1]})
		}
		var n int
		op := write(func(k *Key, st Stamp) (*Op, error) {
			op, added, err := k.HSet(key, fs, st)
			n = added
			return op, err
		})
		return orReply(&reply, func() string { return integer(n) }), op
	case "HDEL", "SREM", "ZREM":
		var n int
		op := write(func(k *Key, st Stamp) (*Op, error) {
			var op *Op
			var err error
			switch name {
			case "HDEL":
				op, n, err = k.HDel(key, args, st)
			case "SREM":
				op, n, err = k.SRem(key, args, st)
			default:
				op, n, err = k.ZRem(key, args, st)
			}
			return op, err
		})
		return orReply(&reply, func() string { return integer(n) }), op
	case "HINCRBY":
		var v int64
		op := write(func(k *Key, st Stamp) (*Op, error) {
			op, n, err := k.HIncrBy(key, args[0], num(args[1]), st)
			v = n
			return op, err
		})
		return orReply(&reply, func() string { return "(integer) " + strconv.FormatInt(v, 10) }), op
	case "SADD":
		var n int
		op := write(func(k *Key, st Stamp) (*Op, error) {
			op, added, err := k.SAdd(key, args, st)
			n = added
			return op, err
		})
		return orReply(&reply, func() string { return integer(n) }), op
	case "ZADD": // ZADD key score member [score member ...]
		var ms []Field
		for i := 0; i+1 < len(args); i += 2 {
			ms = append(ms, Field{Name: args[i+1], Score: flt(args[i])})
		}
		var n int
		op := write(func(k *Key, st Stamp) (*Op, error) {
			op, count, _, _, err := k.ZAdd(key, ZAddOpts{}, ms, st)
			n = count
			return op, err
		})
		return orReply(&reply, func() string { return integer(n) }), op
	case "ZINCRBY":
		var v float64
		op := write(func(k *Key, st Stamp) (*Op, error) {
			op, score, err := k.ZIncrBy(key, args[1], flt(args[0]), st)
			v = score
			return op, err
		})
		return orReply(&reply, func() string { return strconv.Quote(FormatFloat(v)) }), op
	}
	t.Fatalf("unknown command %q", line)
	return "", nil
}

func orReply(reply *string, ok func() string) string {
	if *reply != "" {
		return *reply
	}
	return ok()
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func fmtArray(items []string) string {
	if len(items) == 0 {
		return "(empty array)"
	}
	var b strings.Builder
	for i, it := range items {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%d) %q", i+1, it)
	}
	return b.String()
}

func allElems(k *Key) []*Elem {
	var out []*Elem
	if k.Str != nil {
		out = append(out, k.Str)
	}
	for _, m := range []map[string]*Elem{k.Hash, k.Members, k.ZSet} {
		for _, n := range sortedKeys(m) {
			out = append(out, m[n])
		}
	}
	return out
}

// ---------------------------------------------------------------------------
// The examples in docs/semantics.md.

// renderSemCase renders an example as the Markdown table of the document:
// one row per moment, a column per region.
func renderSemCase(c semCase, res semRun) string {
	var b strings.Builder
	b.WriteString("| t (s) | sgp | fra |\n| ---: | --- | --- |\n")
	secs := func(ms int64) string { return strconv.FormatFloat(float64(ms)/1000, 'f', -1, 64) }
	for i := 0; i < len(c.steps); {
		st := c.steps[i]
		cells := map[string]string{}
		switch {
		case st.gc:
			cells["sgp"], cells["fra"] = "♻ tombstones collected", "♻ tombstones collected"
			i++
		case st.sync != "":
			for _, r := range res.received[i] {
				from := map[string]string{"sgp": "fra", "fra": "sgp"}[r]
				cell := "⇐ receives " + from + "'s writes"
				if st.confl[r] != "" {
					cell += " (conflict: " + st.confl[r] + ")"
				}
				cells[r] = cell
			}
			i++
		default:
			for i < len(c.steps) && c.steps[i].region != "" && c.steps[i].at == st.at && cells[c.steps[i].region] == "" {
				s := c.steps[i]
				cells[s.region] = "`" + s.cmd + "` → `" + s.reply + "`"
				i++
			}
		}
		fmt.Fprintf(&b, "| %s | %s | %s |\n", secs(st.at), cells["sgp"], cells["fra"])
	}
	return b.String()
}

const (
	exampleOpen  = "<!-- example: "
	exampleClose = "<!-- /example -->"
)

// TestSemanticsDoc requires docs/semantics.md to show every example exactly
// as the tests run it, and no example that is not tested.
func TestSemanticsDoc(t *testing.T) {
	doc, err := os.ReadFile(semanticsDoc)
	if err != nil {
		t.Fatal(err)
	}
	text := string(doc)
	seen := map[string]bool{}
	for _, c := range semCases {
		seen[c.name] = true
		open := exampleOpen + c.name + " -->\n"
		i := strings.Index(text, open)
		if i < 0 {
			t.Errorf("docs/semantics.md has no example %q; add %q and %q and run with -rewrite", c.name, strings.TrimSpace(open), exampleClose)
			continue
		}
		start := i + len(open)
		end := strings.Index(text[start:], exampleClose)
		if end < 0 {
			t.Errorf("example %q is not closed", c.name)
			continue
		}
		want := renderSemCase(c, runSemCase(t, c))
		if got := text[start : start+end]; got != want {
			if *rewrite {
				text = text[:start] + want + text[start+end:]
				continue
			}
			t.Errorf("example %q in docs/semantics.md differs from the test (run with -rewrite):\n--- doc\n%s--- test\n%s", c.name, got, want)
		}
	}
	for rest := text; ; {
		i := strings.Index(rest, exampleOpen)
		if i < 0 {
			break
		}
		rest = rest[i+len(exampleOpen):]
		name, _, _ := strings.Cut(rest, " ")
		if !seen[name] {
			t.Errorf("docs/semantics.md shows example %q that no test runs", name)
		}
	}
	if *rewrite && string(doc) != text {
		if err := os.WriteFile(semanticsDoc, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
