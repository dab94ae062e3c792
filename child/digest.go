package child

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/globalreplica/globalreplica/crdt"
)

// Digests of the user-visible state, for verifying convergence (`verify`).
//
// The state digested is exactly what Dump reads (the reference of
// "user-visible state"): every key of database 0 with its name, its type,
// its visible value(s) and its deadline. Per key:
//
//	H(key) = SHA-256("gr-digest-1" 0x00 | str(name) | type (1 byte) | deadline (8 bytes, big endian) | body)
//	str(s) = uvarint(len(s)) | s
//	body   = string: str(value)
//	         hash:   uvarint(n) | (str(field) | str(value))...   fields sorted by name
//	         set:    uvarint(n) | str(member)...                 members sorted
//	         zset:   uvarint(n) | (str(member) | 8-byte IEEE 754 bits of the score)...
//	                 members sorted by name, -0 as 0
//
// The deadline is the key's absolute deadline in Unix ms (PEXPIRETIME; 0
// without one), compared exactly and not rounded: a key's deadline is the
// effective deadline of its expiry register, the same number in every
// region that has converged (database 0 holds it with PEXPIREAT), so any
// difference in it is a real difference. A key that expires while a region
// is being scanned can show as a difference: verify while traffic is quiet
// and again if only keys about to expire differ.
//
// The region's digest is the number of keys and the XOR of every H(key),
// which does not depend on the order of the scan, so it is computed with
// SCAN (CountPerScan keys at a time) without holding the keyspace in memory
// (only an 8-byte fingerprint per key, to notice a key SCAN returned twice).
// To find the differing keys cheaply, keys are grouped into 2^bits buckets
// by the first bits of SHA-256(name) (not of the value, so a key falls in
// the same bucket in every region); regions compare bucket digests and then
// the per-key digests of the buckets that differ.

// DigestVersion names the digest definition above; regions compare digests
// only of the same version.
const DigestVersion = 1

// MaxBucketBits bounds the number of buckets (2^MaxBucketBits).
const MaxBucketBits = 16

// CountPerScan is the SCAN COUNT of the digest scans.
const CountPerScan = 1000

// Digest is the digest of a region's user-visible state.
type Digest struct {
	Version int    `json:"version"`
	Keys    int64  `json:"keys"`
	Sum     string `json:"sum"` // hex XOR of the per-key SHA-256 digests
}

// BucketDigest is the digest of the keys of one bucket.
type BucketDigest struct {
	Bucket int    `json:"b"`
	Keys   int64  `json:"n"`
	Sum    string `json:"sum"`
}

// KeyDigest is the digest of one key.
type KeyDigest struct {
	Key string `json:"key"`
	Sum string `json:"sum"`
}

// KeyView is a short view of one key, to show an operator how regions differ.
type KeyView struct {
	Key        string `json:"key"`
	Exists     bool   `json:"exists"`
	Type       string `json:"type,omitempty"`
	Len        int    `json:"len,omitempty"`   // fields or members of a collection, bytes of a string
	Value      string `json:"value,omitempty"` // the value, fields or members, cut short
	DeadlineMs int64  `json:"deadline_ms,omitempty"`
	Sum        string `json:"sum,omitempty"` // the key's digest
}

// Control requests and replies: internal/daemon serves these over NATS on
// ControlSubject(instance, region) + "." + endpoint, and manager sends them.
// Payloads are JSON; an error comes back as a NATS micro service error.
const (
	CtlDigest    = "digest"    // {} -> Digest
	CtlBuckets   = "buckets"   // BucketsRequest -> BucketsReply
	CtlKeys      = "keys"      // KeysRequest -> KeysReply
	CtlView      = "view"      // ViewRequest -> []KeyView
	CtlConflicts = "conflicts" // ConflictsRequest -> ConflictsReply
	CtlPosition  = "position"  // {} -> PositionReply
)

// ControlSubject returns the subject prefix of a region's control endpoints.
func ControlSubject(instance, region string) string { return "gr." + instance + "." + region + ".ctl" }

// BucketsRequest asks for the bucket digests with 2^Bits buckets.
type BucketsRequest struct {
	Bits int `json:"bits"`
}

// BucketsReply is the region's digest and its non-empty buckets.
type BucketsReply struct {
	Digest  Digest         `json:"digest"`
	Bits    int            `json:"bits"`
	Buckets []BucketDigest `json:"buckets"`
}

// KeysRequest asks for the key digests of some buckets, at most Limit keys.
type KeysRequest struct {
	Bits    int   `json:"bits"`
	Buckets []int `json:"buckets"`
	Limit   int   `json:"limit"`
}

// KeysReply lists key digests, sorted by key.
type KeysReply struct {
	Keys      []KeyDigest `json:"keys"`
	Truncated bool        `json:"truncated,omitempty"`
}

// ViewRequest asks for short views of keys.
type ViewRequest struct {
	Keys []string `json:"keys"`
}

// ConflictsRequest asks for the N most recent conflicts.
type ConflictsRequest struct {
	N int `json:"n"`
}

// ConflictsReply is a region's recent conflicts and its counts by kind.
type ConflictsReply struct {
	Conflicts []Conflict       `json:"conflicts"`
	Counts    map[string]int64 `json:"counts"`
}

// PositionReply is a region's replication position.
type PositionReply struct {
	Region  string            `json:"region"`
	Seq     uint64            `json:"seq"`
	Applied map[string]uint64 `json:"applied"`
}

// KeySum returns the digest of one key's visible state (see above).
func KeySum(name string, v crdt.Visible) [32]byte {
	h := sha256.New()
	var buf [binary.MaxVarintLen64]byte
	str := func(s string) {
		h.Write(buf[:binary.PutUvarint(buf[:], uint64(len(s)))])
		h.Write([]byte(s))
	}
	count := func(n int) { h.Write(buf[:binary.PutUvarint(buf[:], uint64(n))]) }
	h.Write([]byte("gr-digest-1\x00"))
	str(name)
	h.Write([]byte{byte(v.Type)})
	var d [8]byte
	binary.BigEndian.PutUint64(d[:], uint64(v.Deadline))
	h.Write(d[:])
	switch v.Type {
	case crdt.TypeString:
		str(v.Str)
	case crdt.TypeHash:
		fs := append([]crdt.Field(nil), v.Fields...)
		sort.Slice(fs, func(i, j int) bool { return fs[i].Name < fs[j].Name })
		count(len(fs))
		for _, f := range fs {
			str(f.Name)
			str(f.Val)
		}
	case crdt.TypeSet:
		ms := append([]string(nil), v.Members...)
		sort.Strings(ms)
		count(len(ms))
		for _, m := range ms {
			str(m)
		}
	case crdt.TypeZSet:
		fs := append([]crdt.Field(nil), v.Fields...)
		sort.Slice(fs, func(i, j int) bool { return fs[i].Name < fs[j].Name })
		count(len(fs))
		for _, f := range fs {
			str(f.Name)
			sc := f.Score
			if sc == 0 {
				sc = 0 // -0 as 0
			}
			binary.BigEndian.PutUint64(d[:], math.Float64bits(sc))
			h.Write(d[:])
		}
	}
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// KeyBucket returns the bucket of a key name among 2^bits buckets.
func KeyBucket(name string, bits int) int {
	if bits <= 0 {
		return 0
	}
	s := sha256.Sum256([]byte(name))
	return int(binary.BigEndian.Uint32(s[:4]) >> (32 - bits))
}

// Accumulator combines per-key digests (XOR and count), in any order.
type Accumulator struct {
	N   int64
	Sum [32]byte
}

// Add adds one key's digest.
func (a *Accumulator) Add(s [32]byte) {
	a.N++
	for i := range a.Sum {
		a.Sum[i] ^= s[i]
	}
}

// Digest returns the accumulated digest.
func (a *Accumulator) Digest() Digest {
	return Digest{Version: DigestVersion, Keys: a.N, Sum: hex.EncodeToString(a.Sum[:])}
}

// DigestOf returns the digest of a state in Dump's form (or the model's
// Snapshot): the digest Engine.Digest computes for that state.
func DigestOf(state map[string]crdt.Visible) Digest {
	var a Accumulator
	for k, v := range state {
		a.Add(KeySum(k, v))
	}
	return a.Digest()
}

// Digest returns the digest of the region's user-visible state (see above).
// It scans the whole keyspace: use it while traffic is quiet.
func (e *Engine) Digest(ctx context.Context) (Digest, error) {
	d, _, err := e.Buckets(ctx, 0)
	return d, err
}

// Buckets returns the digest of the region's user-visible state and the
// digests of its non-empty buckets among 2^bits, in one scan.
func (e *Engine) Buckets(ctx context.Context, bits int) (Digest, []BucketDigest, error) {
	if bits < 0 || bits > MaxBucketBits {
		return Digest{}, nil, fmt.Errorf("child: bucket bits %d out of 0..%d", bits, MaxBucketBits)
	}
	// SCAN may return a key more than once (when Redis resizes the keyspace
	// during the scan), which would count it twice and cancel it out of the
	// XOR: the scan keeps an 8-byte fingerprint per key (not the keys) to
	// detect it, and scans again.
	for attempt := 1; ; attempt++ {
		d, out, dup, err := e.buckets(ctx, bits)
		if err != nil || !dup {
			return d, out, err
		}
		if attempt == scanAttempts {
			return Digest{}, nil, fmt.Errorf("child: the keyspace kept changing during %d scans (SCAN returned keys twice); verify while traffic is quiet", attempt)
		}
	}
}

// scanAttempts bounds the scans of Buckets.
const scanAttempts = 3

func (e *Engine) buckets(ctx context.Context, bits int) (Digest, []BucketDigest, bool, error) {
	var all Accumulator
	buckets := map[int]*Accumulator{}
	var seen []uint64
	err := e.scanVisible(ctx, func(k string, v crdt.Visible) error {
		s := KeySum(k, v)
		all.Add(s)
		seen = append(seen, keyFingerprint(k))
		if bits > 0 {
			b := KeyBucket(k, bits)
			a := buckets[b]
			if a == nil {
				a = &Accumulator{}
				buckets[b] = a
			}
			a.Add(s)
		}
		return nil
	})
	if err != nil {
		return Digest{}, nil, false, err
	}
	slices.Sort(seen)
	for i := 1; i < len(seen); i++ {
		if seen[i] == seen[i-1] {
			return Digest{}, nil, true, nil
		}
	}
	out := make([]BucketDigest, 0, len(buckets))
	for b, a := range buckets {
		d := a.Digest()
		out = append(out, BucketDigest{Bucket: b, Keys: d.Keys, Sum: d.Sum})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Bucket < out[j].Bucket })
	return all.Digest(), out, false, nil
}

// keyFingerprint is 8 bytes of SHA-256 of a key name: two names of a
// region share one with a chance of about n²/2^65.
func keyFingerprint(name string) uint64 {
	s := sha256.Sum256([]byte(name))
	return binary.BigEndian.Uint64(s[8:16])
}

// KeyDigests returns the digests of the keys in the given buckets (of
// 2^bits), sorted by key, at most limit (<= 0: no limit); truncated says
// whether there were more.
func (e *Engine) KeyDigests(ctx context.Context, bits int, buckets []int, limit int) ([]KeyDigest, bool, error) {
	if bits < 0 || bits > MaxBucketBits {
		return nil, false, fmt.Errorf("child: bucket bits %d out of 0..%d", bits, MaxBucketBits)
	}
	want := map[int]bool{}
	for _, b := range buckets {
		want[b] = true
	}
	var out []KeyDigest
	seen := map[string]bool{} // SCAN may return a key twice
	truncated := false
	errLimit := errors.New("limit")
	err := e.scanKeys(ctx, func(k string) bool { return want[KeyBucket(k, bits)] }, func(k string, v crdt.Visible) error {
		if seen[k] {
			return nil
		}
		if limit > 0 && len(out) >= limit {
			truncated = true
			return errLimit
		}
		seen[k] = true
		s := KeySum(k, v)
		out = append(out, KeyDigest{Key: k, Sum: hex.EncodeToString(s[:])})
		return nil
	})
	if err != nil && !errors.Is(err, errLimit) {
		return nil, false, err
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, truncated, nil
}

// ShortValue is how many bytes of a value a KeyView shows.
const ShortValue = 64

// View returns short views of keys, in the order given.
func (e *Engine) View(ctx context.Context, keys []string) ([]KeyView, error) {
	out := make([]KeyView, 0, len(keys))
	for _, k := range keys {
		v, ok, err := e.DumpKey(ctx, k)
		if err != nil {
			return nil, err
		}
		out = append(out, ViewOf(k, v, ok))
	}
	return out, nil
}

// ViewOf returns the short view of a key's visible state.
func ViewOf(k string, v crdt.Visible, exists bool) KeyView {
	kv := KeyView{Key: k, Exists: exists}
	if !exists {
		return kv
	}
	kv.Type, kv.DeadlineMs = v.Type.String(), v.Deadline
	s := KeySum(k, v)
	kv.Sum = hex.EncodeToString(s[:])
	var val string
	switch v.Type {
	case crdt.TypeString:
		kv.Len, val = len(v.Str), strconv.Quote(v.Str)
	case crdt.TypeHash:
		kv.Len = len(v.Fields)
		for i, f := range v.Fields {
			if i > 0 {
				val += " "
			}
			val += f.Name + "=" + strconv.Quote(f.Val)
		}
	case crdt.TypeSet:
		kv.Len = len(v.Members)
		for i, m := range v.Members {
			if i > 0 {
				val += " "
			}
			val += strconv.Quote(m)
		}
	case crdt.TypeZSet:
		kv.Len = len(v.Fields)
		fs := append([]crdt.Field(nil), v.Fields...)
		sort.Slice(fs, func(i, j int) bool { return fs[i].Name < fs[j].Name })
		for i, f := range fs {
			if i > 0 {
				val += " "
			}
			val += strconv.Quote(f.Name) + ":" + crdt.FormatFloat(f.Score)
		}
	}
	if len(val) > ShortValue {
		val = val[:ShortValue] + "..."
	}
	kv.Value = val
	return kv
}

// scanVisible calls fn with the visible state of every key of database 0.
func (e *Engine) scanVisible(ctx context.Context, fn func(string, crdt.Visible) error) error {
	return e.scanKeys(ctx, nil, fn)
}

// scanKeys calls fn with the visible state of every key of database 0 that
// keep accepts (nil: all), reading a SCAN page at a time in two pipelined
// round trips (types and deadlines, then values): the same reads as
// DumpKey, batched.
func (e *Engine) scanKeys(ctx context.Context, keep func(string) bool, fn func(string, crdt.Visible) error) error {
	var cursor uint64
	for {
		keys, next, err := e.rdb.Scan(ctx, cursor, "*", CountPerScan).Result()
		if err != nil {
			return fmt.Errorf("child: scanning keys: %w", err)
		}
		if keep != nil {
			kept := keys[:0]
			for _, k := range keys {
				if keep(k) {
					kept = append(kept, k)
				}
			}
			keys = kept
		}
		if err := e.visiblePage(ctx, keys, fn); err != nil {
			return err
		}
		if next == 0 {
			return nil
		}
		cursor = next
	}
}

func (e *Engine) visiblePage(ctx context.Context, keys []string, fn func(string, crdt.Visible) error) error {
	if len(keys) == 0 {
		return nil
	}
	pipe := e.rdb.Pipeline()
	types := make([]*redis.StatusCmd, len(keys))
	for i, k := range keys {
		types[i] = pipe.Type(ctx, k)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("child: reading key types: %w", err)
	}
	pipe = e.rdb.Pipeline()
	vals := make([]redis.Cmder, len(keys))
	dls := make([]*redis.DurationCmd, len(keys))
	for i, k := range keys {
		switch types[i].Val() {
		case "string":
			vals[i] = pipe.Get(ctx, k)
		case "hash":
			vals[i] = pipe.HGetAll(ctx, k)
		case "set":
			vals[i] = pipe.SMembers(ctx, k)
		case "zset":
			vals[i] = pipe.ZRangeWithScores(ctx, k, 0, -1)
		case "none":
			continue
		default:
			return fmt.Errorf("child: key %q of unexpected type %s", k, types[i].Val())
		}
		dls[i] = pipe.PExpireTime(ctx, k)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) && !wrongType(err) {
		return fmt.Errorf("child: reading values: %w", err)
	}
	for i, k := range keys {
		if vals[i] == nil {
			continue
		}
		var v crdt.Visible
		err := vals[i].Err()
		switch {
		case errors.Is(err, redis.Nil):
			continue // gone since the scan
		case wrongType(err):
			// the key changed type since the scan: read it alone
			var ok bool
			if v, ok, err = e.DumpKey(ctx, k); err != nil {
				return err
			} else if !ok {
				continue
			}
		case err != nil:
			return err
		default:
			ok, err := readVisible(k, vals[i], &v)
			if err != nil {
				return err
			}
			if !ok {
				continue
			}
			if ms := dls[i].Val(); ms > 0 {
				v.Deadline = ms.Milliseconds()
			}
		}
		if err := fn(k, v); err != nil {
			return err
		}
	}
	return nil
}

// readVisible turns one value read into the Visible form DumpKey gives.
func readVisible(k string, c redis.Cmder, v *crdt.Visible) (bool, error) {
	switch c := c.(type) {
	case *redis.StringCmd:
		v.Type = crdt.TypeString
		s, ok, err := decodeString(k, c.Val())
		if err != nil || !ok {
			return false, err
		}
		v.Str = s
	case *redis.MapStringStringCmd:
		v.Type = crdt.TypeHash
		for f, val := range c.Val() {
			v.Fields = append(v.Fields, crdt.Field{Name: f, Val: val})
		}
		if len(v.Fields) == 0 {
			return false, nil
		}
		sort.Slice(v.Fields, func(i, j int) bool { return v.Fields[i].Name < v.Fields[j].Name })
	case *redis.StringSliceCmd:
		v.Type = crdt.TypeSet
		v.Members = c.Val()
		if len(v.Members) == 0 {
			return false, nil
		}
		sort.Strings(v.Members)
	case *redis.ZSliceCmd:
		v.Type = crdt.TypeZSet
		for _, z := range c.Val() {
			m, _ := z.Member.(string)
			v.Fields = append(v.Fields, crdt.Field{Name: m, Score: z.Score})
		}
		if len(v.Fields) == 0 {
			return false, nil
		}
	}
	return true, nil
}

// wrongType reports a WRONGTYPE error of Redis.
func wrongType(err error) bool {
	return err != nil && strings.HasPrefix(err.Error(), "WRONGTYPE")
}
