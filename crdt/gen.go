package crdt

import "math"

// Stamp is what the origin hands a generator: the OpID and HLC timestamp the
// op gets if the command writes, and the wall time in Unix ms. A generator
// that returns no op consumes neither the sequence number nor the clock.
type Stamp struct {
	ID  OpID
	TS  Timestamp
	Now int64
}

// builder assembles the op of one command, one ElemOp per element.
type builder struct {
	st  Stamp
	k   *Key
	op  Op
	idx map[elemRef]int
}

type elemRef struct {
	t    Type
	name string
}

func newBuilder(k *Key, key string, st Stamp) *builder {
	b := &builder{st: st, k: k, op: Op{ID: st.ID, TS: st.TS, Key: key}}
	if k.Expired(st.Now) {
		// A write to an expired key starts a new key: it removes everything
		// it observed of the old one, as a DEL would.
		b.removeAll()
	}
	return b
}

func (b *builder) elemOp(t Type, name string) *ElemOp {
	r := elemRef{t, name}
	if i, ok := b.idx[r]; ok {
		return &b.op.Elems[i]
	}
	if b.idx == nil {
		b.idx = make(map[elemRef]int)
	}
	b.idx[r] = len(b.op.Elems)
	b.op.Elems = append(b.op.Elems, ElemOp{Type: t, Name: name})
	return &b.op.Elems[len(b.op.Elems)-1]
}

// remove adds the removal of everything observed of an element.
func (b *builder) remove(t Type, name string) {
	e := b.k.elem(t, name)
	if e == nil {
		return
	}
	obs := e.observed()
	if len(obs) == 0 {
		return
	}
	eo := b.elemOp(t, name)
	if eo.Rm == nil {
		eo.Rm = obs
	}
}

// removeAll adds the removal of every element of every type and of the TTL.
func (b *builder) removeAll() {
	b.remove(TypeString, "")
	for _, t := range []Type{TypeHash, TypeSet, TypeZSet} {
		for _, n := range sortedKeys(b.k.elems(t)) {
			b.remove(t, n)
		}
	}
	b.clearTTL()
}

// clearTTL adds the removal of the expiry entries observed.
func (b *builder) clearTTL() {
	if len(b.k.Exp.Entries) == 0 {
		return
	}
	if b.op.Exp == nil {
		b.op.Exp = &ExpOp{}
	}
	b.op.Exp.Rm = b.k.Exp.observed()
}

func (b *builder) setTTL(deadline int64) {
	b.clearTTL()
	if b.op.Exp == nil {
		b.op.Exp = &ExpOp{}
	}
	b.op.Exp.Deadline = deadline
}

// set writes a register entry, replacing what the origin observed.
func (b *builder) set(t Type, name, val string, score float64) {
	b.remove(t, name)
	eo := b.elemOp(t, name)
	eo.Kind, eo.Val, eo.Score = KindSet, val, score
}

// incr adds to the origin's counter run of an element.
func (b *builder) incr(t Type, name string, di int64, df float64) {
	eo := b.elemOp(t, name)
	run := Run{Seq: b.st.ID.Seq, Start: b.st.ID.Seq, I: di, F: df}
	if e := b.k.elem(t, name); e != nil {
		c, ok := e.Ctr[b.st.ID.Region]
		if ok && c.Seq > eo.Rm[b.st.ID.Region].Seq {
			run.Start, run.I, run.F = c.Start, c.I+di, c.F+df
		}
	}
	eo.Kind, eo.Run = KindIncr, run
}

// done returns the op, or nil when the command wrote nothing, and applies
// it to the origin's own state.
func (b *builder) done() *Op {
	if len(b.op.Elems) == 0 && b.op.Exp == nil {
		return nil
	}
	b.k.Apply(&b.op)
	return &b.op
}

// visibleAs checks that the key is absent or of type t.
func (k *Key) visibleAs(t Type, now int64) error {
	if vt := k.Type(now); vt != TypeNone && vt != t {
		return ErrWrongType
	}
	return nil
}

// SetOpts are the options of SET.
type SetOpts struct {
	NX, XX   bool
	KeepTTL  bool
	Deadline int64 // absolute Unix ms from EX, PX, EXAT, PXAT; 0 for none
	Get      bool  // GET: the key must be absent or a string
}

// Set writes a string value, replacing whatever the key held that the
// origin observed (of any type). written is false when NX or XX prevented
// the write. With opts.Get, old is the previous value.
func (k *Key) Set(key, val string, opts SetOpts, st Stamp) (op *Op, old string, hadOld, written bool, err error) {
	if opts.Get {
		if err := k.visibleAs(TypeString, st.Now); err != nil {
			return nil, "", false, false, err
		}
	}
	old, hadOld = k.Get(st.Now)
	exists := k.Type(st.Now) != TypeNone
	if (opts.NX && exists) || (opts.XX && !exists) {
		return nil, old, hadOld, false, nil
	}
	if opts.Deadline > 0 && opts.Deadline <= st.Now {
		// A deadline in the past: Redis writes and expires at once, a delete.
		op, _ := k.Del(key, st)
		return op, old, hadOld, true, nil
	}
	b := newBuilder(k, key, st)
	for _, t := range []Type{TypeHash, TypeSet, TypeZSet} {
		for _, n := range sortedKeys(k.elems(t)) {
			b.remove(t, n)
		}
	}
	b.set(TypeString, "", val, 0)
	switch {
	case opts.Deadline > 0:
		b.setTTL(opts.Deadline)
	case !opts.KeepTTL:
		b.clearTTL()
	}
	return b.done(), old, hadOld, true, nil
}

// IncrBy adds an integer to a string counter and returns the new value.
func (k *Key) IncrBy(key string, d int64, st Stamp) (*Op, int64, error) {
	if err := k.visibleAs(TypeString, st.Now); err != nil {
		return nil, 0, err
	}
	cur := int64(0)
	if v, ok := k.Get(st.Now); ok {
		kind, n, _ := parseNum(v)
		if kind != numInt {
			if kind == numFloat && isCanonicalInt(v) {
				return nil, 0, ErrOverflow
			}
			return nil, 0, ErrNotInteger
		}
		cur = n
	}
	if err := checkIntAdd(cur, d); err != nil {
		return nil, 0, err
	}
	b := newBuilder(k, key, st)
	b.incr(TypeString, "", d, 0)
	if err := b.checkRun(TypeString, ""); err != nil {
		return nil, 0, err
	}
	return b.done(), cur + d, nil
}

// IncrByFloat adds a float to a string counter and returns the new value as
// the client sees it.
func (k *Key) IncrByFloat(key string, d float64, st Stamp) (*Op, string, error) {
	if err := k.visibleAs(TypeString, st.Now); err != nil {
		return nil, "", err
	}
	cur := 0.0
	if v, ok := k.Get(st.Now); ok {
		kind, _, f := parseNum(v)
		if kind == numNone {
			return nil, "", ErrNotFloat
		}
		cur = f
	}
	if r := cur + d; math.IsNaN(r) || math.IsInf(r, 0) || math.IsNaN(d) || math.IsInf(d, 0) {
		return nil, "", ErrNaN
	}
	b := newBuilder(k, key, st)
	b.incr(TypeString, "", 0, d)
	op := b.done()
	v, _ := k.Get(st.Now)
	return op, v, nil
}

// checkRun refuses an increment whose run sum would leave the exact range.
func (b *builder) checkRun(t Type, name string) error {
	run := b.elemOp(t, name).Run
	if run.I > MaxSafeInt || run.I < -MaxSafeInt {
		return ErrOverflow
	}
	return nil
}

func checkIntAdd(cur, d int64) error {
	if d > MaxSafeInt || d < -MaxSafeInt {
		return ErrOverflow
	}
	if r := cur + d; r > MaxSafeInt || r < -MaxSafeInt {
		return ErrOverflow
	}
	return nil
}

// Append appends to a string (a SET of the concatenation that keeps the
// TTL) and returns the new length.
func (k *Key) Append(key, suffix string, st Stamp) (*Op, int, error) {
	if err := k.visibleAs(TypeString, st.Now); err != nil {
		return nil, 0, err
	}
	old, _ := k.Get(st.Now)
	op, _, _, _, err := k.Set(key, old+suffix, SetOpts{KeepTTL: true}, st)
	return op, len(old) + len(suffix), err
}

// Del removes the key: everything the origin observed of it, of any type,
// and its TTL. A concurrent write the origin did not observe survives. It
// reports whether the key existed.
func (k *Key) Del(key string, st Stamp) (*Op, bool) {
	if k.Type(st.Now) == TypeNone {
		return nil, false
	}
	b := newBuilder(k, key, st)
	b.removeAll()
	return b.done(), true
}

// ExpireCond is the condition flag of EXPIRE and its relatives.
type ExpireCond uint8

// The EXPIRE conditions.
const (
	ExpireAlways ExpireCond = iota
	ExpireNX
	ExpireXX
	ExpireGT
	ExpireLT
)

// Expire sets the key's deadline (absolute Unix ms). A deadline that is not
// in the future deletes the key, as in Redis. It reports whether the TTL was
// set (or the key deleted).
func (k *Key) Expire(key string, deadline int64, cond ExpireCond, st Stamp) (*Op, bool) {
	if k.Type(st.Now) == TypeNone {
		return nil, false
	}
	cur := k.Exp.Deadline()
	switch cond {
	case ExpireNX:
		if cur != 0 {
			return nil, false
		}
	case ExpireXX:
		if cur == 0 {
			return nil, false
		}
	case ExpireGT:
		if cur == 0 || deadline <= cur {
			return nil, false
		}
	case ExpireLT:
		if cur != 0 && deadline >= cur {
			return nil, false
		}
	}
	if deadline <= st.Now {
		op, _ := k.Del(key, st)
		return op, true
	}
	b := newBuilder(k, key, st)
	b.setTTL(deadline)
	return b.done(), true
}

// Persist removes the key's TTL. Its entry beats any concurrent TTL. It
// reports whether the key had a TTL.
func (k *Key) Persist(key string, st Stamp) (*Op, bool) {
	if k.Type(st.Now) == TypeNone || k.Exp.Deadline() == 0 {
		return nil, false
	}
	b := newBuilder(k, key, st)
	b.setTTL(Persist)
	return b.done(), true
}

// HSet sets hash fields and returns how many were new.
func (k *Key) HSet(key string, fields []Field, st Stamp) (*Op, int, error) {
	if err := k.visibleAs(TypeHash, st.Now); err != nil {
		return nil, 0, err
	}
	expired := k.Expired(st.Now)
	b := newBuilder(k, key, st)
	added := 0
	seen := make(map[string]bool, len(fields))
	for _, f := range fields {
		if !seen[f.Name] {
			seen[f.Name] = true
			if e := k.Hash[f.Name]; expired || e == nil || !e.Live() {
				added++
			}
		}
		b.set(TypeHash, f.Name, f.Val, 0)
	}
	return b.done(), added, nil
}

// HSetNX sets a hash field only if it does not exist.
func (k *Key) HSetNX(key string, f Field, st Stamp) (*Op, bool, error) {
	if err := k.visibleAs(TypeHash, st.Now); err != nil {
		return nil, false, err
	}
	if k.Type(st.Now) == TypeHash {
		if e := k.Hash[f.Name]; e != nil && e.Live() {
			return nil, false, nil
		}
	}
	op, _, err := k.HSet(key, []Field{f}, st)
	return op, true, err
}

// HDel removes hash fields (what the origin observed of them) and returns how
// many existed.
func (k *Key) HDel(key string, names []string, st Stamp) (*Op, int, error) {
	if err := k.visibleAs(TypeHash, st.Now); err != nil {
		return nil, 0, err
	}
	if k.Type(st.Now) != TypeHash {
		return nil, 0, nil
	}
	return k.removeMembers(key, TypeHash, k.Hash, names, st)
}

func (k *Key) removeMembers(key string, t Type, m map[string]*Elem, names []string, st Stamp) (*Op, int, error) {
	b := newBuilder(k, key, st)
	n := 0
	seen := make(map[string]bool, len(names))
	for _, name := range names {
		if e := m[name]; e != nil && e.Live() && !seen[name] {
			seen[name] = true
			n++
			b.remove(t, name)
		}
	}
	if n == 0 {
		return nil, 0, nil
	}
	return b.done(), n, nil
}

// HIncrBy adds an integer to a hash field and returns the new value.
func (k *Key) HIncrBy(key, field string, d int64, st Stamp) (*Op, int64, error) {
	if err := k.visibleAs(TypeHash, st.Now); err != nil {
		return nil, 0, err
	}
	cur := int64(0)
	if e := k.Hash[field]; e != nil && k.Type(st.Now) == TypeHash {
		if v, ok := e.StringValue(); ok {
			kind, n, _ := parseNum(v)
			if kind != numInt {
				return nil, 0, ErrHashNotInteger
			}
			cur = n
		}
	}
	if err := checkIntAdd(cur, d); err != nil {
		return nil, 0, err
	}
	b := newBuilder(k, key, st)
	b.incr(TypeHash, field, d, 0)
	if err := b.checkRun(TypeHash, field); err != nil {
		return nil, 0, err
	}
	return b.done(), cur + d, nil
}

// HIncrByFloat adds a float to a hash field and returns the new value.
func (k *Key) HIncrByFloat(key, field string, d float64, st Stamp) (*Op, string, error) {
	if err := k.visibleAs(TypeHash, st.Now); err != nil {
		return nil, "", err
	}
	cur := 0.0
	if e := k.Hash[field]; e != nil && k.Type(st.Now) == TypeHash {
		if v, ok := e.StringValue(); ok {
			kind, _, f := parseNum(v)
			if kind == numNone {
				return nil, "", ErrHashNotFloat
			}
			cur = f
		}
	}
	if r := cur + d; math.IsNaN(r) || math.IsInf(r, 0) || math.IsNaN(d) || math.IsInf(d, 0) {
		return nil, "", ErrNaN
	}
	b := newBuilder(k, key, st)
	b.incr(TypeHash, field, 0, d)
	op := b.done()
	v, _ := k.Hash[field].StringValue()
	return op, v, nil
}

// SAdd adds set members (add wins over concurrent removes) and returns how
// many were new.
func (k *Key) SAdd(key string, members []string, st Stamp) (*Op, int, error) {
	if err := k.visibleAs(TypeSet, st.Now); err != nil {
		return nil, 0, err
	}
	expired := k.Expired(st.Now)
	b := newBuilder(k, key, st)
	added := 0
	seen := make(map[string]bool, len(members))
	for _, m := range members {
		if seen[m] {
			continue
		}
		seen[m] = true
		if e := k.Members[m]; expired || e == nil || !e.Live() {
			added++
		}
		b.set(TypeSet, m, "", 0)
	}
	return b.done(), added, nil
}

// SRem removes set members (what the origin observed of them) and returns
// how many existed.
func (k *Key) SRem(key string, members []string, st Stamp) (*Op, int, error) {
	if err := k.visibleAs(TypeSet, st.Now); err != nil {
		return nil, 0, err
	}
	if k.Type(st.Now) != TypeSet {
		return nil, 0, nil
	}
	return k.removeMembers(key, TypeSet, k.Members, members, st)
}

// ZAddOpts are the options of ZADD.
type ZAddOpts struct {
	NX, XX, GT, LT, CH, Incr bool
}

// ZAdd adds or updates sorted set members. It returns the count Redis
// replies with (added, or added and changed with CH); with Incr it returns
// the new score in score and ok=false when the condition prevented the write.
func (k *Key) ZAdd(key string, opts ZAddOpts, members []Field, st Stamp) (op *Op, count int, score float64, ok bool, err error) {
	if err := k.visibleAs(TypeZSet, st.Now); err != nil {
		return nil, 0, 0, false, err
	}
	live := k.Type(st.Now) == TypeZSet
	b := newBuilder(k, key, st)
	scores := make(map[string]float64)
	for _, m := range members {
		cur, exists := 0.0, false
		if s, seen := scores[m.Name]; seen {
			cur, exists = s, true
		} else if e := k.ZSet[m.Name]; live && e != nil {
			cur, exists = e.ScoreValue()
		}
		if (opts.NX && exists) || (opts.XX && !exists) {
			continue
		}
		next := m.Score
		if opts.Incr {
			next = cur + m.Score
			if math.IsNaN(next) {
				return nil, 0, 0, false, ErrScoreNaN
			}
		}
		if exists && ((opts.GT && next <= cur) || (opts.LT && next >= cur)) {
			continue
		}
		switch {
		case !exists:
			count++
		case next != cur && opts.CH:
			count++
		}
		scores[m.Name] = next
		score, ok = next, true
		if opts.Incr && exists {
			b.incr(TypeZSet, m.Name, 0, m.Score)
			continue
		}
		b.set(TypeZSet, m.Name, "", next)
	}
	return b.done(), count, score, ok, nil
}

// ZIncrBy adds to a member's score; increments from all regions add up and
// survive a concurrent ZREM. It returns the new score.
func (k *Key) ZIncrBy(key, member string, d float64, st Stamp) (*Op, float64, error) {
	if err := k.visibleAs(TypeZSet, st.Now); err != nil {
		return nil, 0, err
	}
	cur := 0.0
	if e := k.ZSet[member]; e != nil && k.Type(st.Now) == TypeZSet {
		cur, _ = e.ScoreValue()
	}
	if math.IsNaN(cur + d) {
		return nil, 0, ErrScoreNaN
	}
	b := newBuilder(k, key, st)
	b.incr(TypeZSet, member, 0, d)
	op := b.done()
	s, _ := k.ZSet[member].ScoreValue()
	return op, s, nil
}

// ZRem removes sorted set members (what the origin observed of them, scores
// and increments) and returns how many existed.
func (k *Key) ZRem(key string, members []string, st Stamp) (*Op, int, error) {
	if err := k.visibleAs(TypeZSet, st.Now); err != nil {
		return nil, 0, err
	}
	if k.Type(st.Now) != TypeZSet {
		return nil, 0, nil
	}
	return k.removeMembers(key, TypeZSet, k.ZSet, members, st)
}
