package child

import (
	"context"
	"fmt"
	"sort"

	"github.com/globalreplica/globalreplica/crdt"
)

// Dump reads the user-visible state of every key in the region, in the
// model's form: what convergence is judged on (and what `verify` compares).
// It is not a point-in-time snapshot: use it while traffic is quiet.
func (e *Engine) Dump(ctx context.Context) (map[string]crdt.Visible, error) {
	out := map[string]crdt.Visible{}
	iter := e.rdb.Scan(ctx, 0, "*", 1000).Iterator()
	for iter.Next(ctx) {
		k := iter.Val()
		v, ok, err := e.DumpKey(ctx, k)
		if err != nil {
			return nil, err
		}
		if ok {
			out[k] = v
		}
	}
	return out, iter.Err()
}

// DumpKey reads one key's user-visible state; ok is false if it does not exist.
func (e *Engine) DumpKey(ctx context.Context, k string) (crdt.Visible, bool, error) {
	var v crdt.Visible
	typ, err := e.rdb.Type(ctx, k).Result()
	if err != nil {
		return v, false, err
	}
	switch typ {
	case "none":
		return v, false, nil
	case "string":
		v.Type = crdt.TypeString
		s, ok, err := e.Get(ctx, k)
		if err != nil || !ok {
			return v, ok, err
		}
		v.Str = s
	case "hash":
		v.Type = crdt.TypeHash
		m, err := e.rdb.HGetAll(ctx, k).Result()
		if err != nil {
			return v, false, err
		}
		for f, val := range m {
			v.Fields = append(v.Fields, crdt.Field{Name: f, Val: val})
		}
		sort.Slice(v.Fields, func(i, j int) bool { return v.Fields[i].Name < v.Fields[j].Name })
	case "set":
		v.Type = crdt.TypeSet
		if v.Members, err = e.rdb.SMembers(ctx, k).Result(); err != nil {
			return v, false, err
		}
		sort.Strings(v.Members)
	case "zset":
		v.Type = crdt.TypeZSet
		zs, err := e.rdb.ZRangeWithScores(ctx, k, 0, -1).Result()
		if err != nil {
			return v, false, err
		}
		for _, z := range zs {
			m, _ := z.Member.(string)
			v.Fields = append(v.Fields, crdt.Field{Name: m, Score: z.Score})
		}
	default:
		return v, false, fmt.Errorf("child: key %q of unexpected type %s", k, typ)
	}
	ms, err := e.rdb.PExpireTime(ctx, k).Result()
	if err != nil {
		return v, false, err
	}
	if ms > 0 {
		v.Deadline = ms.Milliseconds()
	}
	return v, true, nil
}
