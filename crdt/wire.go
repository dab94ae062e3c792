package crdt

import (
	"bytes"
	"fmt"
	"math"

	"github.com/vmihailenco/msgpack/v5"
)

// WireVersion is the version of the op and state encodings this build
// writes and reads. Decoders reject any other version with
// ErrUnsupportedVersion, so a region running an older build stops loudly
// instead of misreading ops from a newer one.
const WireVersion = 1

// The wire format is a MessagePack array, chosen because Redis's Lua has a
// MessagePack codec (cmsgpack) built in, so the scripts and Go share it:
//
//	op     = [version, region, seq, ms, lc, key, [elemop...], exp]
//	elemop = [type, name, [run...], kind]              kind 0: remove only
//	       | [type, name, [run...], 1, value|score]    kind 1: set
//	       | [type, name, [run...], 2, start, i, f]    kind 2: increment
//	run    = [region, seq, start, i, f]
//	exp    = [] | [[[region, seq]...], deadline]
//	batch  = [version, [op...]]
//
// Integers that Lua writes may arrive in any MessagePack integer width and
// floats with an integral value as integers; the decoders accept both.

// MarshalBinary encodes the op.
func (op *Op) MarshalBinary() ([]byte, error) {
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	if err := encodeOp(enc, op); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func encodeOp(enc *msgpack.Encoder, op *Op) error {
	w := &writer{enc: enc}
	w.arr(8)
	w.int(WireVersion)
	w.str(op.ID.Region)
	w.uint(op.ID.Seq)
	w.int(op.TS.Ms)
	w.uint(uint64(op.TS.Lc))
	w.str(op.Key)
	w.arr(len(op.Elems))
	for i := range op.Elems {
		eo := &op.Elems[i]
		n := 4
		switch eo.Kind {
		case KindSet:
			n = 5
		case KindIncr:
			n = 7
		}
		w.arr(n)
		w.uint(uint64(eo.Type))
		w.str(eo.Name)
		w.runs(eo.Rm)
		w.uint(uint64(eo.Kind))
		switch eo.Kind {
		case KindSet:
			if eo.Type == TypeZSet {
				w.float(eo.Score)
			} else {
				w.str(eo.Val)
			}
		case KindIncr:
			w.uint(eo.Run.Start)
			w.int(eo.Run.I)
			w.float(eo.Run.F)
		}
	}
	if op.Exp == nil {
		w.arr(0)
	} else {
		w.arr(2)
		w.vector(op.Exp.Rm)
		w.int(op.Exp.Deadline)
	}
	return w.err
}

// MarshalBatch encodes ops as one batch.
func MarshalBatch(ops []*Op) ([]byte, error) {
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	if err := enc.EncodeArrayLen(2); err != nil {
		return nil, err
	}
	if err := enc.EncodeInt(WireVersion); err != nil {
		return nil, err
	}
	if err := enc.EncodeArrayLen(len(ops)); err != nil {
		return nil, err
	}
	for _, op := range ops {
		if err := encodeOp(enc, op); err != nil {
			return nil, err
		}
	}
	return buf.Bytes(), nil
}

// UnmarshalOp decodes one op. Bytes that are not exactly one valid op give
// an error wrapping ErrCorrupt or ErrUnsupportedVersion; it never panics.
func UnmarshalOp(b []byte) (*Op, error) {
	r := newReader(b)
	defer r.release()
	op := r.op()
	if r.err == nil && r.rd.Len() != 0 {
		r.fail("trailing bytes")
	}
	if r.err != nil {
		return nil, r.err
	}
	return op, nil
}

// UnmarshalBatch decodes a batch of ops.
func UnmarshalBatch(b []byte) ([]*Op, error) {
	r := newReader(b)
	defer r.release()
	// The version comes first, so that a batch of a later format is
	// reported as such whatever its shape.
	if r.versioned() != 2 {
		r.fail("batch is not a pair")
	}
	n := r.arr()
	var ops []*Op
	for i := 0; i < n && r.err == nil; i++ {
		ops = append(ops, r.op())
	}
	if r.err == nil && r.rd.Len() != 0 {
		r.fail("trailing bytes")
	}
	if r.err != nil {
		return nil, r.err
	}
	return ops, nil
}

// writer encodes with a sticky error.
type writer struct {
	enc *msgpack.Encoder
	err error
}

func (w *writer) do(err error) {
	if w.err == nil {
		w.err = err
	}
}
func (w *writer) arr(n int)       { w.do(w.enc.EncodeArrayLen(n)) }
func (w *writer) int(n int64)     { w.do(w.enc.EncodeInt(n)) }
func (w *writer) uint(n uint64)   { w.do(w.enc.EncodeUint(n)) }
func (w *writer) float(f float64) { w.do(w.enc.EncodeFloat64(f)) }
func (w *writer) str(s string)    { w.do(w.enc.EncodeString(s)) }

func (w *writer) runs(m map[string]Run) {
	w.arr(len(m))
	var buf [8]string
	for _, r := range appendSortedKeys(buf[:0], m) {
		w.run(r, m[r])
	}
}

// run writes one region's run of a run map.
func (w *writer) run(region string, run Run) {
	w.arr(5)
	w.str(region)
	w.uint(run.Seq)
	w.uint(run.Start)
	w.int(run.I)
	w.float(run.F)
}

// bufWriter is a writer into its own buffer, with an encoder from
// msgpack's pool; done returns the bytes and the encoder.
type bufWriter struct {
	writer
	buf bytes.Buffer
}

func newBufWriter(size int) *bufWriter {
	b := &bufWriter{}
	b.buf.Grow(size)
	b.enc = msgpack.GetEncoder()
	b.enc.Reset(&b.buf)
	return b
}

func (b *bufWriter) done() []byte {
	msgpack.PutEncoder(b.enc)
	b.enc = nil
	return b.buf.Bytes()
}

func (w *writer) vector(v Vector) {
	w.arr(len(v))
	for _, r := range sortedKeys(v) {
		w.arr(2)
		w.str(r)
		w.uint(v[r])
	}
}

// reader decodes with a sticky error and bounds every length by the bytes
// left, so hostile input cannot make it allocate or loop much.
type reader struct {
	br  bytes.Reader
	rd  *bytes.Reader // &br
	dec *msgpack.Decoder
	err error
}

// newReader reads b with a decoder from msgpack's pool; release returns it.
func newReader(b []byte) *reader {
	r := &reader{}
	r.br.Reset(b)
	r.rd = &r.br
	r.dec = msgpack.GetDecoder()
	r.dec.Reset(r.rd)
	return r
}

// release hands the decoder back to the pool; the reader is done.
func (r *reader) release() {
	msgpack.PutDecoder(r.dec)
	r.dec = nil
}

func (r *reader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, args...))
	}
}

func (r *reader) check(err error) bool {
	if err != nil {
		r.fail("%v", err)
		return false
	}
	return r.err == nil
}

func (r *reader) arr() int {
	if r.err != nil {
		return 0
	}
	n, err := r.dec.DecodeArrayLen()
	if !r.check(err) {
		return 0
	}
	if n < 0 || n > r.rd.Len() {
		r.fail("array length %d", n)
		return 0
	}
	return n
}

func (r *reader) int() int64 {
	if r.err != nil {
		return 0
	}
	n, err := r.dec.DecodeInt64()
	r.check(err)
	return n
}

func (r *reader) uint() uint64 {
	if r.err != nil {
		return 0
	}
	n, err := r.dec.DecodeUint64()
	r.check(err)
	return n
}

func (r *reader) float() float64 {
	if r.err != nil {
		return 0
	}
	f, err := r.dec.DecodeFloat64()
	r.check(err)
	return f
}

func (r *reader) str() string {
	if r.err != nil {
		return ""
	}
	code, err := r.dec.PeekCode()
	if !r.check(err) {
		return ""
	}
	if code == 0xc0 { // nil
		r.fail("nil string")
		return ""
	}
	s, err := r.dec.DecodeString()
	r.check(err)
	return s
}

func (r *reader) region() string {
	s := r.str()
	if r.err == nil && !ValidRegion(s) {
		r.fail("region %q", s)
	}
	return s
}

func (r *reader) version() {
	v := r.int()
	if r.err == nil && v != WireVersion {
		r.err = fmt.Errorf("%w: %d (this build reads %d)", ErrUnsupportedVersion, v, WireVersion)
	}
}

// versioned reads the header of a record, an array whose first element is
// the format version, and returns the array's length. The version is
// checked before the length, so that a record of a later format is
// reported as such (ErrUnsupportedVersion) whatever its shape.
func (r *reader) versioned() int {
	n := r.arr()
	if r.err == nil && n < 1 {
		r.fail("record is an empty array")
		return 0
	}
	r.version()
	if r.err != nil {
		return 0
	}
	return n
}

func (r *reader) op() *Op {
	if r.versioned() != 8 {
		r.fail("op is not an 8-element array")
		return nil
	}
	op := &Op{}
	op.ID.Region = r.region()
	op.ID.Seq = r.uint()
	op.TS = Timestamp{Ms: r.int(), Region: op.ID.Region}
	lc := r.uint()
	if lc > math.MaxUint32 {
		r.fail("logical clock %d", lc)
	}
	op.TS.Lc = uint32(lc)
	if r.err == nil && op.ID.Seq == 0 {
		r.fail("sequence number 0")
	}
	op.Key = r.str()
	n := r.arr()
	if n > 0 {
		op.Elems = make([]ElemOp, 0, n)
	}
	for i := 0; i < n && r.err == nil; i++ {
		op.Elems = append(op.Elems, r.elemOp(op.ID))
	}
	switch r.arr() {
	case 0:
	case 2:
		op.Exp = &ExpOp{Rm: r.vector(), Deadline: r.int()}
		if r.err == nil && op.Exp.Deadline < Persist {
			r.fail("deadline %d", op.Exp.Deadline)
		}
	default:
		r.fail("expiry is not an empty array or a pair")
	}
	if r.err != nil {
		return nil
	}
	return op
}

func (r *reader) elemOp(id OpID) ElemOp {
	n := r.arr()
	if n < 4 {
		r.fail("element op of %d items", n)
		return ElemOp{}
	}
	t := r.uint()
	if r.err == nil && (t < uint64(TypeString) || t > uint64(TypeZSet)) {
		r.fail("type %d", t)
	}
	eo := ElemOp{Type: Type(t), Name: r.str(), Rm: r.runs(), Kind: ElemKind(r.uint())}
	if r.err == nil && eo.Type == TypeString && eo.Name != "" {
		r.fail("string element with a name")
	}
	want := map[ElemKind]int{KindRemove: 4, KindSet: 5, KindIncr: 7}[eo.Kind]
	if r.err == nil && (n != want || want == 0) {
		r.fail("element op kind %d with %d items", eo.Kind, n)
		return ElemOp{}
	}
	switch eo.Kind {
	case KindSet:
		if eo.Type == TypeZSet {
			eo.Score = r.float()
		} else {
			eo.Val = r.str()
		}
	case KindIncr:
		eo.Run = Run{Seq: id.Seq, Start: r.uint(), I: r.int(), F: r.float()}
		if r.err == nil && (eo.Run.Start == 0 || eo.Run.Start > id.Seq) {
			r.fail("counter run start %d for op %d", eo.Run.Start, id.Seq)
		}
	}
	return eo
}

func (r *reader) runs() map[string]Run {
	n := r.arr()
	if n == 0 {
		return nil
	}
	m := make(map[string]Run, n)
	for i := 0; i < n && r.err == nil; i++ {
		if r.arr() != 5 {
			r.fail("run is not a 5-element array")
			return nil
		}
		region := r.region()
		run := Run{Seq: r.uint(), Start: r.uint(), I: r.int(), F: r.float()}
		if _, dup := m[region]; dup && r.err == nil {
			r.fail("region %q twice", region)
		}
		m[region] = run
	}
	return m
}

func (r *reader) vector() Vector {
	n := r.arr()
	if n == 0 {
		return nil
	}
	v := make(Vector, n)
	for i := 0; i < n && r.err == nil; i++ {
		if r.arr() != 2 {
			r.fail("vector entry is not a pair")
			return nil
		}
		region := r.region()
		seq := r.uint()
		if _, dup := v[region]; dup && r.err == nil {
			r.fail("region %q twice", region)
		}
		v[region] = seq
	}
	return v
}

// ValidRegion reports whether s is a valid region id: 1 to 32 characters of
// lower-case letters, digits and '-', starting with a letter. Region ids
// appear in NATS subjects, Redis key names and metric labels.
func ValidRegion(s string) bool {
	if len(s) == 0 || len(s) > 32 || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// LastSeq returns the sequence number of the last of a run of encoded ops
// (0 for none): the point up to which an op log read from its head can be
// trimmed once those ops are shipped.
func LastSeq(ops [][]byte) (uint64, error) {
	if len(ops) == 0 {
		return 0, nil
	}
	id, err := PeekID(ops[len(ops)-1])
	return id.Seq, err
}

// PeekID decodes only the OpID of an encoded op, for the shipper's hot path.
func PeekID(b []byte) (OpID, error) {
	r := newReader(b)
	defer r.release()
	if r.versioned() != 8 {
		r.fail("op is not an 8-element array")
	}
	id := OpID{Region: r.region(), Seq: r.uint()}
	if r.err == nil && id.Seq == 0 {
		r.fail("sequence number 0")
	}
	return id, r.err
}
