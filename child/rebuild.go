package child

import (
	"context"
	_ "embed"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/globalreplica/globalreplica/crdt"
)

// Region rebuild, the engine's side: export a region's keys a page at a
// time, each user key with all its Redis keys copied atomically (DUMP and
// PEXPIRETIME of the key in database 0 and of its state keys in database
// 1, in one function call), and import such copies into another region's
// Redis (RESTORE REPLACE with the absolute deadlines). Both regions run the
// same Redis major version: DUMP payloads carry an RDB version that an
// older Redis refuses. internal/daemon runs the protocol around it.

//go:embed lua/rebuild.lua
var luaRebuildLib string

// ExportPhases is the number of scan phases of an export: the user keys of
// database 0, the keys named by database 1's state keys (tombstones
// included), and again the live strings of database 0 that carry a
// removal context (a string revived from a tombstone during phase 0 would
// otherwise be missed with its tombstone).
const ExportPhases = 3

// RecordSlots is the number of Redis keys of one user key in an
// ExportRecord: the key in database 0, then 'k:', 'h:', 's:', 'z:' and
// 'x:' in database 1.
const RecordSlots = 6

// Slot is one Redis key of a user key's copy.
type Slot struct {
	Dump     []byte // DUMP payload; nil when the key does not exist
	ExpireAt int64  // absolute deadline in ms; <= 0 for none
}

// ExportRecord is the atomic copy of one user key.
type ExportRecord struct {
	Key   string
	Slots [RecordSlots]Slot
}

// Size returns the approximate encoded size of the record.
func (r *ExportRecord) Size() int {
	n := len(r.Key) + 4
	for _, s := range r.Slots {
		n += len(s.Dump) + 12
	}
	return n
}

// ErrCorruptExport is returned by DecodeRecords for bytes that are not an
// export stream.
var ErrCorruptExport = errors.New("child: corrupt export stream")

// maxRecordField bounds one length in an export stream (a DUMP payload),
// as Redis bounds a bulk string (proto-max-bulk-len).
const maxRecordField = 512 << 20

// AppendRecord appends the encoding of r to buf: the key and each slot as
// a uvarint length and the bytes, a slot's deadline as a varint after it;
// a slot of length 0 is absent and has no deadline.
func AppendRecord(buf []byte, r *ExportRecord) []byte {
	buf = binary.AppendUvarint(buf, uint64(len(r.Key)))
	buf = append(buf, r.Key...)
	for _, s := range r.Slots {
		buf = binary.AppendUvarint(buf, uint64(len(s.Dump)))
		if len(s.Dump) > 0 {
			buf = append(buf, s.Dump...)
			buf = binary.AppendVarint(buf, s.ExpireAt)
		}
	}
	return buf
}

// DecodeRecords decodes the complete records at the start of buf and
// returns them with the number of bytes they took; an incomplete record at
// the end is left for the caller to complete with more bytes.
func DecodeRecords(buf []byte) ([]ExportRecord, int, error) {
	var out []ExportRecord
	used := 0
	for used < len(buf) {
		r, n, err := decodeRecord(buf[used:])
		if err != nil {
			return out, used, err
		}
		if n == 0 {
			break
		}
		out = append(out, r)
		used += n
	}
	return out, used, nil
}

// decodeRecord decodes one record; n is 0 when buf holds only part of it.
func decodeRecord(buf []byte) (ExportRecord, int, error) {
	var r ExportRecord
	off := 0
	field := func() ([]byte, bool, error) {
		l, n := binary.Uvarint(buf[off:])
		if n < 0 || l > maxRecordField {
			return nil, false, fmt.Errorf("%w: bad length at byte %d", ErrCorruptExport, off)
		}
		if n == 0 || uint64(len(buf)-off-n) < l {
			return nil, false, nil
		}
		b := buf[off+n : off+n+int(l)]
		off += n + int(l)
		return b, true, nil
	}
	k, ok, err := field()
	if err != nil || !ok {
		return r, 0, err
	}
	r.Key = string(k)
	for i := range r.Slots {
		d, ok, err := field()
		if err != nil || !ok {
			return r, 0, err
		}
		if len(d) == 0 {
			continue
		}
		t, n := binary.Varint(buf[off:])
		if n < 0 {
			return r, 0, fmt.Errorf("%w: bad deadline at byte %d", ErrCorruptExport, off)
		}
		if n == 0 {
			return r, 0, nil
		}
		off += n
		r.Slots[i] = Slot{Dump: append([]byte(nil), d...), ExpireAt: t}
	}
	return r, off, nil
}

// rebuildCall calls a function of the rebuild library, loading it first
// when Redis does not have it.
func (e *Engine) rebuildCall(ctx context.Context, fn string, argv []any) (any, error) {
	v, err := e.rdb.FCall(ctx, fn, nil, argv...).Result()
	if isNoFunction(err) {
		if err := e.rdb.FunctionLoadReplace(ctx, luaRebuildLib).Err(); err != nil {
			return nil, fmt.Errorf("child: loading the rebuild library into redis: %w", err)
		}
		v, err = e.rdb.FCall(ctx, fn, nil, argv...).Result()
	}
	return v, err
}

// ExportPage copies the keys of one SCAN step (COUNT count) of phase
// (0..ExportPhases-1) from cursor; it returns the next cursor ("0" when the
// phase is done) and the copies. A key can come in several phases and
// pages; each copy is atomic and a later one replaces an earlier one.
func (e *Engine) ExportPage(ctx context.Context, phase int, cursor string, count int) (string, []ExportRecord, error) {
	if phase < 0 || phase >= ExportPhases {
		return "", nil, fmt.Errorf("child: export phase %d out of 0..%d", phase, ExportPhases-1)
	}
	v, err := e.rebuildCall(ctx, "gr_export", []any{phase, cursor, count})
	if err != nil {
		return "", nil, fmt.Errorf("child: export: %w", err)
	}
	arr, ok := v.([]any)
	if !ok || len(arr) < 1 || (len(arr)-1)%(1+2*RecordSlots) != 0 {
		return "", nil, fmt.Errorf("child: unexpected export reply of %T", v)
	}
	next, _ := arr[0].(string)
	var recs []ExportRecord
	for i := 1; i < len(arr); i += 1 + 2*RecordSlots {
		var r ExportRecord
		r.Key, _ = arr[i].(string)
		for s := range RecordSlots {
			d, _ := arr[i+1+2*s].(string)
			if d != "" {
				r.Slots[s] = Slot{Dump: []byte(d), ExpireAt: toInt(arr[i+2+2*s])}
			}
		}
		recs = append(recs, r)
	}
	return next, recs, nil
}

// ImportRecords replaces the keys of recs with their copies, each key
// atomically (in one function call for all of them).
func (e *Engine) ImportRecords(ctx context.Context, recs []ExportRecord) error {
	if len(recs) == 0 {
		return nil
	}
	argv := make([]any, 0, len(recs)*(1+2*RecordSlots))
	for i := range recs {
		argv = append(argv, recs[i].Key)
		for _, s := range recs[i].Slots {
			if len(s.Dump) == 0 {
				argv = append(argv, "", -2)
				continue
			}
			argv = append(argv, s.Dump, s.ExpireAt)
		}
	}
	if _, err := e.rebuildCall(ctx, "gr_import", argv); err != nil {
		return fmt.Errorf("child: import: %w (rebuilds need the same Redis major version in both regions)", err)
	}
	return nil
}

// KeyCounts returns the number of keys in database 0 and database 1 (the
// size of an export, roughly).
func (e *Engine) KeyCounts(ctx context.Context) (int64, int64, error) {
	n0, err := e.rdb.DBSize(ctx).Result()
	if err != nil {
		return 0, 0, err
	}
	n1, err := e.meta.DBSize(ctx).Result()
	return n0, n1, err
}

// BeginRebuild marks the region's Redis as being rebuilt (meta field
// rebuild = id) and refuses local writes from now on (its ready mark is
// cleared) in one atomic step. The mark outlives the process that set it:
// a region whose rebuild stopped part way stays refusing writes until a
// rebuild completes (EndRebuild).
func (e *Engine) BeginRebuild(ctx context.Context, id string) error {
	_, err := e.meta.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, keyMeta, "rebuild", id)
		p.HDel(ctx, keyMeta, "ready")
		return nil
	})
	return err
}

// RebuildMark returns the id of the rebuild that marked the region's Redis,
// or "".
func (e *Engine) RebuildMark(ctx context.Context) (string, error) {
	v, err := e.meta.HGet(ctx, keyMeta, "rebuild").Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	return v, err
}

// EndRebuild clears the rebuild mark (MarkReady allows writes after).
func (e *Engine) EndRebuild(ctx context.Context) error {
	return e.meta.HDel(ctx, keyMeta, "rebuild").Err()
}

// WipeState deletes the region's user keys (database 0) and their state
// keys (database 1: k:, h:, s:, z:, x:), but not the region's sequence,
// HLC, op log, applied vector or leases. It returns the keys deleted.
func (e *Engine) WipeState(ctx context.Context) (int, error) {
	n := 0
	for _, step := range []struct {
		c     *redis.Client
		match string
	}{{e.rdb, "*"}, {e.meta, "[khszx]:*"}} {
		var cursor uint64
		for {
			keys, next, err := step.c.Scan(ctx, cursor, step.match, 1000).Result()
			if err != nil {
				return n, err
			}
			if len(keys) > 0 {
				if err := step.c.Unlink(ctx, keys...).Err(); err != nil {
					return n, err
				}
				n += len(keys)
			}
			if cursor = next; cursor == 0 {
				break
			}
		}
	}
	return n, nil
}

// SetApplied replaces the applied vector with v (the region's own entry,
// if any, is left out: its sequence is meta's), atomically.
func (e *Engine) SetApplied(ctx context.Context, v crdt.Vector) error {
	_, err := e.meta.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, keyApplied)
		for o, s := range v {
			if o != e.cfg.Region && s > 0 {
				p.HSet(ctx, keyApplied, o, s)
			}
		}
		return nil
	})
	return err
}

// Control requests of a rebuild (served by internal/daemon on the peer's
// control service, see CtlDigest and the others):
//
//	export  ExportRequest -> ExportReply: opens an export session. The
//	        reply names the session's subject; each request there with an
//	        ExportNext payload answers with the next chunk of the export
//	        stream (AppendRecord encoding, cut anywhere) as raw bytes, with
//	        the headers ExportHeaderDone ("1" on the last chunk),
//	        ExportHeaderKeys (keys exported so far) and ExportHeaderError.
const CtlExport = "export"

// Headers of an export chunk.
const (
	ExportHeaderDone  = "Gr-Export-Done"
	ExportHeaderKeys  = "Gr-Export-Keys"
	ExportHeaderError = "Gr-Export-Error"
)

// ExportRequest opens an export session.
type ExportRequest struct {
	// ChunkBytes bounds each chunk (default and maximum: what the NATS
	// payload limit allows).
	ChunkBytes int `json:"chunk_bytes"`
}

// ExportReply describes an export session.
type ExportReply struct {
	Region  string `json:"region"`
	Session string `json:"session"` // the subject to send ExportNext requests to
	// Position is the region's position read before the copy began: its
	// applied vector with its own sequence number (Position.Applied).
	Position map[string]uint64 `json:"position"`
	// Keys is the number of keys in the region's databases 0 and 1 when
	// the copy began: an estimate of the keys to copy.
	Keys       int64 `json:"keys"`
	ChunkBytes int   `json:"chunk_bytes"`
}

// ExportNext asks for chunk number Chunk (0, 1, ...); asking for the last
// chunk again repeats it (a retry after a lost reply).
type ExportNext struct {
	Chunk uint64 `json:"chunk"`
}

// ExportHeaderClock carries, on the last chunk, the exporting region's
// HLC read after the copy ("ms.lc"): at least the timestamp of every op in
// the copied state. The importer raises its HLC to it, so that its next
// local writes order after everything it now observes.
const ExportHeaderClock = "Gr-Export-Clock"

// Clock returns the region's HLC (meta ms and lc).
func (e *Engine) Clock(ctx context.Context) (crdt.Timestamp, error) {
	v, err := e.meta.HMGet(ctx, keyMeta, "ms", "lc").Result()
	if err != nil {
		return crdt.Timestamp{}, err
	}
	ts := crdt.Timestamp{Region: e.cfg.Region}
	if s, ok := v[0].(string); ok {
		ts.Ms, _ = strconv.ParseInt(s, 10, 64)
	}
	if s, ok := v[1].(string); ok {
		lc, _ := strconv.ParseUint(s, 10, 32)
		ts.Lc = uint32(lc)
	}
	return ts, nil
}

// FormatClock and ParseClock write and read ExportHeaderClock.
func FormatClock(ts crdt.Timestamp) string { return fmt.Sprintf("%d.%d", ts.Ms, ts.Lc) }

// ParseClock reads an ExportHeaderClock value.
func ParseClock(s string) (crdt.Timestamp, error) {
	var ts crdt.Timestamp
	if _, err := fmt.Sscanf(s, "%d.%d", &ts.Ms, &ts.Lc); err != nil {
		return ts, fmt.Errorf("%w: clock %q", ErrCorruptExport, s)
	}
	return ts, nil
}
