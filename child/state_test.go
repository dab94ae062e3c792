package child

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/globalreplica/globalreplica/crdt"
)

// sameState checks that the CRDT state the engine keeps in Redis is the
// state the model holds, element by element (tombstones included), not only
// the visible values: a difference there would show up later, after more
// ops, as a divergence. With ignoreTime, HLC timestamps are not compared
// (the model's clock is not Redis's when both run the same commands).
func sameState(t *testing.T, what string, e *Engine, model *crdt.Store, ignoreTime bool) {
	t.Helper()
	ctx := context.Background()
	canon := func(typ crdt.Type, el *crdt.Elem) []byte {
		if el == nil || (len(el.Entries) == 0 && len(el.Ctr) == 0 && len(el.Rm) == 0) {
			return nil
		}
		c := *el
		if ignoreTime {
			c.Entries = append([]crdt.Entry(nil), el.Entries...)
			for i := range c.Entries {
				c.Entries[i].Ms, c.Entries[i].Lc = 0, 0
			}
		}
		return crdt.MarshalState(typ, &c, nil)
	}
	decode := func(typ crdt.Type, raw string) *crdt.Elem {
		el, _, err := crdt.UnmarshalState(typ, []byte(raw))
		if err != nil {
			t.Fatalf("%s: engine state does not decode: %v", what, err)
		}
		return el
	}
	seen := map[string]bool{}
	for _, name := range model.KeyNames() {
		k := model.Keys[name]
		seen[name] = true
		// the string element: db 0 when live, else k:<key>
		raw, err := e.rdb.Get(ctx, name).Result()
		if err != nil {
			raw, err = e.meta.Get(ctx, "k:"+name).Result()
		}
		var got *crdt.Elem
		switch {
		case err == nil:
			got = decode(crdt.TypeString, raw)
		case !errors.Is(err, redis.Nil) && !isWrongType(err):
			t.Fatal(err)
		}
		if g, w := canon(crdt.TypeString, got), canon(crdt.TypeString, k.Str); !bytes.Equal(g, w) {
			t.Fatalf("%s: key %q string state: engine %+v, model %+v", what, name, got, k.Str)
		}
		for _, c := range []struct {
			typ    crdt.Type
			prefix string
			elems  map[string]*crdt.Elem
		}{{crdt.TypeHash, "h:", k.Hash}, {crdt.TypeSet, "s:", k.Members}, {crdt.TypeZSet, "z:", k.ZSet}} {
			all, err := e.meta.HGetAll(ctx, c.prefix+name).Result()
			if err != nil {
				t.Fatal(err)
			}
			for f, raw := range all {
				if g, w := canon(c.typ, decode(c.typ, raw)), canon(c.typ, c.elems[f]); !bytes.Equal(g, w) {
					t.Fatalf("%s: key %q %s element %q: engine %+v, model %+v", what, name, c.typ, f, decode(c.typ, raw), c.elems[f])
				}
			}
			for f, el := range c.elems {
				if _, ok := all[f]; !ok && canon(c.typ, el) != nil {
					t.Fatalf("%s: key %q %s element %q: missing in the engine, model %+v", what, name, c.typ, f, el)
				}
			}
		}
		xraw, err := e.meta.Get(ctx, "x:"+name).Result()
		var gx crdt.Expiry
		if err == nil {
			_, x, derr := crdt.UnmarshalState(crdt.TypeString, []byte(xraw))
			if derr != nil {
				t.Fatal(derr)
			}
			gx = *x
		}
		if !sameExpiry(gx, k.Exp) {
			t.Fatalf("%s: key %q expiry register: engine %+v, model %+v", what, name, gx, k.Exp)
		}
	}
	// nothing in the engine that the model does not have
	keys, err := e.meta.Keys(ctx, "[khszx]:*").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if !seen[k[2:]] {
			t.Fatalf("%s: the engine keeps %q, the model has no key %q", what, k, k[2:])
		}
	}
}

func sameExpiry(a, b crdt.Expiry) bool {
	if len(a.Entries) != len(b.Entries) || len(a.Rm) != len(b.Rm) {
		return false
	}
	for i := range a.Entries {
		if a.Entries[i] != b.Entries[i] {
			return false
		}
	}
	for r, s := range a.Rm {
		if b.Rm[r] != s {
			return false
		}
	}
	return true
}

func isWrongType(err error) bool {
	return err != nil && len(err.Error()) > 9 && err.Error()[:9] == "WRONGTYPE"
}
