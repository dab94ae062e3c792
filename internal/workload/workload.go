// Package workload generates random writes for tests and benchmarks, in the
// engine's normalized command form (child.Engine.Write).
package workload

import (
	"fmt"
	"math/rand/v2"
	"strconv"
)

// Mix draws writes of every supported type on a small hot keyspace: Keys
// keys per type family and Fields fields or members per key, so that
// concurrent writers from several regions conflict often.
type Mix struct {
	Keys   int
	Fields int
	// NoTTL leaves out writes with expiry (useful where wall-clock
	// deadlines would make a comparison time-dependent).
	NoTTL bool
}

// Next returns one write: the engine command name and its arguments.
func (m Mix) Next(r *rand.Rand) []string {
	key := func(prefix string) string { return fmt.Sprintf("%s%d", prefix, r.IntN(m.Keys)) }
	field := fmt.Sprintf("f%d", r.IntN(m.Fields))
	vals := []string{"a", "bb", "1", "-7", "2.5", "10"}
	val := vals[r.IntN(len(vals))]
	switch r.IntN(16) {
	case 0:
		return []string{"set", key("s"), val, "0", "0", "0", "0", "", "0"}
	case 1:
		if m.NoTTL {
			return []string{"set", key("s"), val, "0", "0", "0", "1", "", "0"}
		}
		return []string{"set", key("s"), val, "0", "0", "0", "0", "rel", "3600000"}
	case 2, 3:
		return []string{"incrby", key("c"), strconv.Itoa(r.IntN(11) - 5)}
	case 4:
		return []string{"incrbyfloat", key("c"), strconv.FormatFloat(float64(r.IntN(9)-4)/4, 'g', -1, 64)}
	case 5:
		return []string{"del", key([]string{"s", "c", "h", "t", "z"}[r.IntN(5)])}
	case 6:
		if m.NoTTL {
			return []string{"persist", key("s")}
		}
		return []string{"expire", key("s"), "rel", strconv.Itoa(3600000 + r.IntN(1000)), ""}
	case 7, 8:
		return []string{"hset", key("h"), field, val}
	case 9:
		return []string{"hdel", key("h"), field}
	case 10:
		return []string{"hincrby", key("h"), field, strconv.Itoa(r.IntN(7) - 3)}
	case 11:
		return []string{"sadd", key("t"), field}
	case 12:
		return []string{"srem", key("t"), field}
	case 13:
		return []string{"zadd", key("z"), "", strconv.Itoa(r.IntN(7) - 3), field}
	case 14:
		return []string{"zincrby", key("z"), strconv.Itoa(r.IntN(5) - 2), field}
	default:
		return []string{"zrem", key("z"), field}
	}
}
