package child

import (
	"context"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/globalreplica/globalreplica/internal/testredis"

	"github.com/globalreplica/globalreplica/crdt"
)

// diffCmd is one write command in both forms: the engine's normalized
// arguments and the model's generator.
type diffCmd struct {
	args  []string
	model func(s *crdt.Store, now int64) (string, *crdt.Op, error)
}

// write runs a model generator and returns its reply and op (nil if none).
func write(s *crdt.Store, key string, now int64, f func(k *crdt.Key, st crdt.Stamp) (*crdt.Op, string, error)) (string, *crdt.Op, error) {
	var reply string
	op, err := s.Write(key, now, func(k *crdt.Key, st crdt.Stamp) (*crdt.Op, error) {
		op, r, err := f(k, st)
		reply = r
		return op, err
	})
	return reply, op, err
}

func b2s(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// randomCmd draws a write on a small hot keyspace.
func randomCmd(r *rand.Rand, now int64) diffCmd {
	keys := []string{"k0", "k1", "k2"}
	key := keys[r.IntN(len(keys))]
	fields := []string{"f0", "f1", "f2"}
	field := fields[r.IntN(len(fields))]
	vals := []string{"a", "bb", "1", "-7", "2.5", "10"}
	val := vals[r.IntN(len(vals))]
	far := now + int64(3600_000+r.IntN(1000))
	switch r.IntN(17) {
	case 0, 1:
		nx, xx, get, keep := r.IntN(5) == 0, r.IntN(5) == 0, r.IntN(3) == 0, r.IntN(4) == 0
		if nx && xx {
			xx = false
		}
		mode, ms := "", int64(0)
		switch r.IntN(5) {
		case 0:
			mode, ms = "abs", far
		case 1:
			mode, ms = "abs", now-1000
		}
		if mode != "" {
			keep = false
		}
		return diffCmd{
			args: []string{"set", key, val, b2s(nx), b2s(xx), b2s(get), b2s(keep), mode, strconv.FormatInt(ms, 10)},
			model: func(s *crdt.Store, now int64) (string, *crdt.Op, error) {
				return write(s, key, now, func(k *crdt.Key, st crdt.Stamp) (*crdt.Op, string, error) {
					op, old, had, written, err := k.Set(key, val, crdt.SetOpts{NX: nx, XX: xx, Get: get, KeepTTL: keep, Deadline: ms}, st)
					switch {
					case get && had:
						return op, old, err
					case get:
						return op, "<nil>", err
					case written:
						return op, "OK", err
					}
					return op, "<nil>", err
				})
			},
		}
	case 2, 3:
		d := int64(r.IntN(11) - 5)
		return diffCmd{args: []string{"incrby", key, strconv.FormatInt(d, 10)}, model: func(s *crdt.Store, now int64) (string, *crdt.Op, error) {
			return write(s, key, now, func(k *crdt.Key, st crdt.Stamp) (*crdt.Op, string, error) {
				op, v, err := k.IncrBy(key, d, st)
				return op, strconv.FormatInt(v, 10), err
			})
		}}
	case 4:
		d := float64(r.IntN(9)-4) / 4
		return diffCmd{args: []string{"incrbyfloat", key, crdt.FormatFloat(d)}, model: func(s *crdt.Store, now int64) (string, *crdt.Op, error) {
			return write(s, key, now, func(k *crdt.Key, st crdt.Stamp) (*crdt.Op, string, error) {
				return k.IncrByFloat(key, d, st)
			})
		}}
	case 5:
		return diffCmd{args: []string{"append", key, val}, model: func(s *crdt.Store, now int64) (string, *crdt.Op, error) {
			return write(s, key, now, func(k *crdt.Key, st crdt.Stamp) (*crdt.Op, string, error) {
				op, n, err := k.Append(key, val, st)
				return op, strconv.Itoa(n), err
			})
		}}
	case 6:
		return diffCmd{args: []string{"del", key}, model: func(s *crdt.Store, now int64) (string, *crdt.Op, error) {
			return write(s, key, now, func(k *crdt.Key, st crdt.Stamp) (*crdt.Op, string, error) {
				op, ok := k.Del(key, st)
				return op, b2s(ok), nil
			})
		}}
	case 7:
		d := far
		if r.IntN(4) == 0 {
			d = now - 5000
		}
		conds := []crdt.ExpireCond{crdt.ExpireAlways, crdt.ExpireNX, crdt.ExpireXX, crdt.ExpireGT, crdt.ExpireLT}
		names := []string{"", "nx", "xx", "gt", "lt"}
		ci := r.IntN(len(conds))
		return diffCmd{args: []string{"expire", key, "abs", strconv.FormatInt(d, 10), names[ci]}, model: func(s *crdt.Store, now int64) (string, *crdt.Op, error) {
			return write(s, key, now, func(k *crdt.Key, st crdt.Stamp) (*crdt.Op, string, error) {
				op, ok := k.Expire(key, d, conds[ci], st)
				return op, b2s(ok), nil
			})
		}}
	case 8:
		return diffCmd{args: []string{"persist", key}, model: func(s *crdt.Store, now int64) (string, *crdt.Op, error) {
			return write(s, key, now, func(k *crdt.Key, st crdt.Stamp) (*crdt.Op, string, error) {
				op, ok := k.Persist(key, st)
				return op, b2s(ok), nil
			})
		}}
	case 9:
		return diffCmd{args: []string{"hset", key, field, val}, model: func(s *crdt.Store, now int64) (string, *crdt.Op, error) {
			return write(s, key, now, func(k *crdt.Key, st crdt.Stamp) (*crdt.Op, string, error) {
				op, n, err := k.HSet(key, []crdt.Field{{Name: field, Val: val}}, st)
				return op, strconv.Itoa(n), err
			})
		}}
	case 10:
		return diffCmd{args: []string{"hdel", key, field}, model: func(s *crdt.Store, now int64) (string, *crdt.Op, error) {
			return write(s, key, now, func(k *crdt.Key, st crdt.Stamp) (*crdt.Op, string, error) {
				op, n, err := k.HDel(key, []string{field}, st)
				return op, strconv.Itoa(n), err
			})
		}}
	case 11:
		d := int64(r.IntN(7) - 3)
		return diffCmd{args: []string{"hincrby", key, field, strconv.FormatInt(d, 10)}, model: func(s *crdt.Store, now int64) (string, *crdt.Op, error) {
			return write(s, key, now, func(k *crdt.Key, st crdt.Stamp) (*crdt.Op, string, error) {
				op, v, err := k.HIncrBy(key, field, d, st)
				return op, strconv.FormatInt(v, 10), err
			})
		}}
	case 12:
		return diffCmd{args: []string{"sadd", key, field}, model: func(s *crdt.Store, now int64) (string, *crdt.Op, error) {
			return write(s, key, now, func(k *crdt.Key, st crdt.Stamp) (*crdt.Op, string, error) {
				op, n, err := k.SAdd(key, []string{field}, st)
				return op, strconv.Itoa(n), err
			})
		}}
	case 13:
		return diffCmd{args: []string{"srem", key, field}, model: func(s *crdt.Store, now int64) (string, *crdt.Op, error) {
			return write(s, key, now, func(k *crdt.Key, st crdt.Stamp) (*crdt.Op, string, error) {
				op, n, err := k.SRem(key, []string{field}, st)
				return op, strconv.Itoa(n), err
			})
		}}
	case 14:
		var o crdt.ZAddOpts
		flags := ""
		switch r.IntN(6) {
		case 0:
			o.NX, flags = true, "n"
		case 1:
			o.XX, o.CH, flags = true, true, "xc"
		case 2:
			o.GT, flags = true, "g"
		case 3:
			o.Incr, flags = true, "i"
		}
		sc := float64(r.IntN(7)-3) / 2
		return diffCmd{args: []string{"zadd", key, flags, crdt.FormatFloat(sc), field}, model: func(s *crdt.Store, now int64) (string, *crdt.Op, error) {
			return write(s, key, now, func(k *crdt.Key, st crdt.Stamp) (*crdt.Op, string, error) {
				op, n, score, ok, err := k.ZAdd(key, o, []crdt.Field{{Name: field, Score: sc}}, st)
				if o.Incr {
					if !ok {
						return op, "<nil>", err
					}
					return op, crdt.FormatFloat(score), err
				}
				return op, strconv.Itoa(n), err
			})
		}}
	case 15:
		d := float64(r.IntN(5) - 2)
		return diffCmd{args: []string{"zincrby", key, crdt.FormatFloat(d), field}, model: func(s *crdt.Store, now int64) (string, *crdt.Op, error) {
			return write(s, key, now, func(k *crdt.Key, st crdt.Stamp) (*crdt.Op, string, error) {
				op, v, err := k.ZIncrBy(key, field, d, st)
				return op, crdt.FormatFloat(v), err
			})
		}}
	default:
		return diffCmd{args: []string{"zrem", key, field}, model: func(s *crdt.Store, now int64) (string, *crdt.Op, error) {
			return write(s, key, now, func(k *crdt.Key, st crdt.Stamp) (*crdt.Op, string, error) {
				op, n, err := k.ZRem(key, []string{field}, st)
				return op, strconv.Itoa(n), err
			})
		}}
	}
}

// replyString renders an engine reply like the model's replies.
func replyString(v any, err error) (string, error) {
	if err != nil {
		return "", err
	}
	switch x := v.(type) {
	case nil:
		return "<nil>", nil
	case int64:
		return strconv.FormatInt(x, 10), nil
	case string:
		return x, nil
	}
	return fmt.Sprint(v), nil
}

// redisSnapshot reads the user-visible state of database 0 in the model's form.
func redisSnapshot(t *testing.T, e *Engine) map[string]crdt.Visible {
	t.Helper()
	d, err := e.Dump(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// newTestEngine starts an engine on a new redis-server. Every remote batch
// takes the fast path (FastApplyMin 1) so that the tests of remote applies
// run it with batches of every size.
func newTestEngine(t *testing.T, region string) *Engine {
	t.Helper()
	return newTestEngineWith(t, EngineConfig{Instance: "test", Region: region, FastApplyMin: 1})
}

// newTestEngineWith is newTestEngine with the engine's config.
func newTestEngineWith(t *testing.T, cfg EngineConfig) *Engine {
	t.Helper()
	e, err := NewEngine(context.Background(), cfg, testredis.Start(t).Client(), zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	if err := e.MarkReady(context.Background()); err != nil {
		t.Fatal(err)
	}
	return e
}

func sameSnapshot(t *testing.T, what string, got, want map[string]crdt.Visible) {
	t.Helper()
	if len(got) == 0 && len(want) == 0 {
		return
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s: redis and model differ\nredis: %+v\nmodel: %+v", what, got, want)
	}
}

// TestDifferentialLocalWrites runs random local write sequences through the
// engine and through the crdt model: every reply and the visible state must
// be identical.
func TestDifferentialLocalWrites(t *testing.T) {
	ctx := context.Background()
	e := newTestEngine(t, "sgp")
	for round := 0; round < 100; round++ {
		if err := e.rdb.FlushAll(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		if err := e.MarkReady(ctx); err != nil { // a wiped Redis refuses writes until marked
			t.Fatal(err)
		}
		model := crdt.NewStore("sgp")
		r := rand.New(rand.NewPCG(uint64(round), 7))
		var history []string
		for i := 0; i < 60; i++ {
			now := time.Now().UnixMilli()
			c := randomCmd(r, now)
			history = append(history, fmt.Sprint(c.args))
			got, gerr := replyString(e.Write(ctx, c.args[0], c.args[1:]...))
			want, _, werr := c.model(model, now)
			if (gerr != nil) != (werr != nil) || (gerr != nil && gerr.Error() != werr.Error()) || (gerr == nil && got != want) {
				t.Fatalf("round %d: %v: engine %q %v, model %q %v\nhistory: %v", round, c.args, got, gerr, want, werr, history)
			}
		}
		now := time.Now().UnixMilli()
		sameSnapshot(t, fmt.Sprintf("round %d %v", round, history), redisSnapshot(t, e), model.Snapshot(now))
		sameState(t, fmt.Sprintf("round %d %v", round, history), e, model, true)
		pos, err := e.Position(ctx)
		if err != nil || pos.Seq != model.Seq {
			t.Fatalf("sequence: engine %d (%v), model %d", pos.Seq, err, model.Seq)
		}
	}
}

// TestDifferentialRemoteApply checks the engine's apply script against the
// model's merge: two model regions write concurrently with the engine's own
// region; every op reaches every region (the engine through Apply, in order
// per origin, interleaved); the engine's own ops are read back from its op
// log, decoded and applied to the model. The engine's visible state must
// always equal the model replica of its region, and in the end all regions
// must show the same state. In a third of the batches a local write runs
// between the fast path's read and the apply (Engine.applyHook), so that
// fast items find their key changed and must be merged the general way.
// Every other round delivers through ApplyChains, preparing a batch while
// the one before it is not applied yet (history.applyAhead).
func TestDifferentialRemoteApply(t *testing.T) {
	e := newTestEngine(t, "iad")
	applied, conflicts, liveKeys := 0, 0, 0
	fastSent, fastApplied := 0, 0
	var h *history
	e.applyHook = func(argv []any) {
		for _, a := range argv {
			if a == casTag {
				fastSent++
			}
		}
		if h.r.IntN(3) == 0 {
			h.localWrite(time.Now().UnixMilli())
		}
	}
	for round := 0; round < 50; round++ {
		h = newHistory(t, e, uint64(round), 11)
		if round%2 == 1 {
			h.chains = map[string]*ApplyChain{}
		}
		for step := 0; step < 120; step++ {
			now := time.Now().UnixMilli()
			switch x := h.r.IntN(10); {
			case x < 3:
				h.localWrite(now)
			case x < 6:
				h.remoteWrite(now)
			case x < 8:
				res, n, ok := h.deliverToEngine(h.randomRemote(), true)
				if ok && res.Applied != n {
					t.Fatalf("applied %d of a batch of %d new ops: %+v", res.Applied, n, res)
				}
				applied += res.Applied
				fastApplied += res.Fast
				for _, c := range res.Conflicts {
					conflicts += c
				}
			default:
				h.deliverToModel(h.regions[h.randomRemote()])
			}
			what := fmt.Sprintf("round %d step %d", round, step)
			sameSnapshot(t, what, redisSnapshot(t, e), h.mirror.Snapshot(time.Now().UnixMilli()))
			sameState(t, what, e, h.mirror, false)
		}
		h.deliverAll()
		now := time.Now().UnixMilli()
		got := redisSnapshot(t, e)
		liveKeys += len(got)
		sameSnapshot(t, fmt.Sprintf("round %d final vs mirror", round), got, h.mirror.Snapshot(now))
		for name, reg := range h.regions {
			sameSnapshot(t, fmt.Sprintf("round %d final vs %s", round, name), got, reg.store.Snapshot(now))
		}
	}
	// The histories must have exercised the merge: remote ops applied,
	// concurrent writes met, keys left to compare.
	if applied < 500 || conflicts < 20 || liveKeys < 25 {
		t.Fatalf("weak histories: %d ops applied, %d conflicts, %d live keys", applied, conflicts, liveKeys)
	}
	// Both ways of a fast item must have run: written by compare-and-set,
	// and merged the general way after a local write changed the key.
	if fastApplied < 50 || fastSent-fastApplied < 50 {
		t.Fatalf("fast path not exercised: %d fast items sent, %d applied by compare-and-set", fastSent, fastApplied)
	}
	t.Logf("%d remote ops applied (%d of %d fast items by compare-and-set), %d conflicts resolved, %d live keys compared",
		applied, fastApplied, fastSent, conflicts, liveKeys)
}
