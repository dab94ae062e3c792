package devredis

import (
	"encoding/binary"
	"math"
	"sort"

	lua "github.com/yuin/gopher-lua"
)

// The cmsgpack module of Redis's Lua (deps/lua/src/lua_cmsgpack.c), byte for
// byte where the engine depends on it: a number that is integral and fits
// an int64 is packed as the smallest msgpack int (unsigned forms for n >= 0),
// any other number as float32 when that is exact and float64 otherwise; a
// table whose keys are exactly 1..n (an empty one too) as an array, any other
// table as a map; strings as fixstr/str8/str16/str32. Unpacking accepts what
// Redis accepts (no bin, no ext).
//
// One difference: Redis writes a map's pairs in the order of Lua's next(),
// which depends on its hash table; this implementation sorts the keys. The
// engine packs no maps.

const (
	mpMaxNesting = 16 // LUACMSGPACK_MAX_NESTING
	errMPNeedsIn = "MessagePack pack needs input."
	errMPMissing = "Missing bytes in input."
	errMPBadFmt  = "Bad data format in input."
)

func openCmsgpack(ls *lua.LState) *lua.LTable {
	t := ls.NewTable()
	ls.SetFuncs(t, map[string]lua.LGFunction{
		"pack":         mpPack,
		"unpack":       mpUnpack,
		"unpack_one":   mpUnpackOne,
		"unpack_limit": mpUnpackLimit,
	})
	t.RawSetString("_NAME", lua.LString("cmsgpack"))
	t.RawSetString("_VERSION", lua.LString("lua-cmsgpack 0.4.0"))
	return t
}

func mpPack(ls *lua.LState) int {
	n := ls.GetTop()
	if n == 0 {
		ls.RaiseError("%s", errMPNeedsIn)
		return 0
	}
	var buf []byte
	for i := 1; i <= n; i++ {
		buf = mpEncode(buf, ls.Get(i), 0)
	}
	ls.Push(lua.LString(buf))
	return 1
}

// mpEncode appends the encoding of v (mp_encode_lua_type).
func mpEncode(b []byte, v lua.LValue, level int) []byte {
	switch x := v.(type) {
	case lua.LString:
		return mpEncodeBytes(b, string(x))
	case lua.LBool:
		if x {
			return append(b, 0xc3)
		}
		return append(b, 0xc2)
	case lua.LNumber:
		return mpEncodeNumber(b, float64(x))
	case *lua.LTable:
		if level == mpMaxNesting-1 {
			return append(b, 0xc0)
		}
		if n, ok := mpArrayLen(x); ok {
			b = mpEncodeArrayHeader(b, n)
			for i := 1; i <= n; i++ {
				b = mpEncode(b, x.RawGetInt(i), level+1)
			}
			return b
		}
		return mpEncodeMap(b, x, level)
	default:
		return append(b, 0xc0)
	}
}

func mpEncodeBytes(b []byte, s string) []byte {
	n := len(s)
	switch {
	case n < 32:
		b = append(b, 0xa0|byte(n))
	case n <= 0xff:
		b = append(b, 0xd9, byte(n))
	case n <= 0xffff:
		b = append(b, 0xda)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, 0xdb)
		b = binary.BigEndian.AppendUint32(b, uint32(n))
	}
	return append(b, s...)
}

// mpEncodeNumber follows mp_encode_lua_number: IS_INT64_EQUIVALENT(n) picks
// the integer encoding (the C cast of an out-of-range double gives INT64_MIN,
// which never equals it, so those go to the float path as here).
func mpEncodeNumber(b []byte, f float64) []byte {
	if !math.IsInf(f, 0) && f == math.Trunc(f) && f >= -(1<<63) && f < (1<<63) {
		return mpEncodeInt(b, int64(f))
	}
	if f32 := float32(f); float64(f32) == f {
		b = append(b, 0xca)
		return binary.BigEndian.AppendUint32(b, math.Float32bits(f32))
	}
	b = append(b, 0xcb)
	return binary.BigEndian.AppendUint64(b, math.Float64bits(f))
}

func mpEncodeInt(b []byte, n int64) []byte {
	if n >= 0 {
		switch {
		case n <= 127:
			return append(b, byte(n))
		case n <= 0xff:
			return append(b, 0xcc, byte(n))
		case n <= 0xffff:
			return binary.BigEndian.AppendUint16(append(b, 0xcd), uint16(n))
		case n <= 0xffffffff:
			return binary.BigEndian.AppendUint32(append(b, 0xce), uint32(n))
		default:
			return binary.BigEndian.AppendUint64(append(b, 0xcf), uint64(n))
		}
	}
	switch {
	case n >= -32:
		return append(b, byte(int8(n)))
	case n >= -128:
		return append(b, 0xd0, byte(int8(n)))
	case n >= -32768:
		return binary.BigEndian.AppendUint16(append(b, 0xd1), uint16(int16(n)))
	case n >= -2147483648:
		return binary.BigEndian.AppendUint32(append(b, 0xd2), uint32(int32(n)))
	default:
		return binary.BigEndian.AppendUint64(append(b, 0xd3), uint64(n))
	}
}

// mpArrayLen is table_is_an_array: every key a positive number equal to a
// C int, and the largest key equal to the number of keys.
func mpArrayLen(t *lua.LTable) (int, bool) {
	count, maxKey, ok := 0, 0, true
	t.ForEach(func(k, _ lua.LValue) {
		if !ok {
			return
		}
		n, isNum := k.(lua.LNumber)
		f := float64(n)
		if !isNum || f <= 0 || f != math.Trunc(f) || f > math.MaxInt32 {
			ok = false
			return
		}
		if int(f) > maxKey {
			maxKey = int(f)
		}
		count++
	})
	return count, ok && maxKey == count
}

func mpEncodeArrayHeader(b []byte, n int) []byte {
	switch {
	case n <= 15:
		return append(b, 0x90|byte(n))
	case n <= 0xffff:
		return binary.BigEndian.AppendUint16(append(b, 0xdc), uint16(n))
	default:
		return binary.BigEndian.AppendUint32(append(b, 0xdd), uint32(n))
	}
}

func mpEncodeMap(b []byte, t *lua.LTable, level int) []byte {
	type kv struct{ k, v lua.LValue }
	var pairs []kv
	t.ForEach(func(k, v lua.LValue) { pairs = append(pairs, kv{k, v}) })
	sort.Slice(pairs, func(i, j int) bool { return luaKeyLess(pairs[i].k, pairs[j].k) })
	n := len(pairs)
	switch {
	case n <= 15:
		b = append(b, 0x80|byte(n))
	case n <= 0xffff:
		b = binary.BigEndian.AppendUint16(append(b, 0xde), uint16(n))
	default:
		b = binary.BigEndian.AppendUint32(append(b, 0xdf), uint32(n))
	}
	for _, p := range pairs {
		b = mpEncode(b, p.k, level+1)
		b = mpEncode(b, p.v, level+1)
	}
	return b
}

// luaKeyLess orders map keys deterministically: numbers, then strings, then
// booleans, then the rest in their string form.
func luaKeyLess(a, b lua.LValue) bool {
	ra, rb := keyRank(a), keyRank(b)
	if ra != rb {
		return ra < rb
	}
	switch x := a.(type) {
	case lua.LNumber:
		return x < b.(lua.LNumber)
	case lua.LString:
		return x < b.(lua.LString)
	case lua.LBool:
		return !bool(x) && bool(b.(lua.LBool))
	}
	return a.String() < b.String()
}

func keyRank(v lua.LValue) int {
	switch v.(type) {
	case lua.LNumber:
		return 0
	case lua.LString:
		return 1
	case lua.LBool:
		return 2
	}
	return 3
}

// decoding ---------------------------------------------------------------------

type mpDecodeError string

func (e mpDecodeError) Error() string { return string(e) }

type mpCursor struct {
	ls  *lua.LState
	buf string
	pos int
}

func (c *mpCursor) need(n int) error {
	if len(c.buf)-c.pos < n {
		return mpDecodeError(errMPMissing)
	}
	return nil
}

func (c *mpCursor) u8() (uint64, error) {
	if err := c.need(1); err != nil {
		return 0, err
	}
	c.pos++
	return uint64(c.buf[c.pos-1]), nil
}

func (c *mpCursor) be(n int) (uint64, error) {
	if err := c.need(n); err != nil {
		return 0, err
	}
	var v uint64
	for i := range n {
		v = v<<8 | uint64(c.buf[c.pos+i])
	}
	c.pos += n
	return v, nil
}

func (c *mpCursor) str(n uint64) (lua.LValue, error) {
	if uint64(len(c.buf)-c.pos) < n {
		return nil, mpDecodeError(errMPMissing)
	}
	s := c.buf[c.pos : c.pos+int(n)]
	c.pos += int(n)
	return lua.LString(s), nil
}

// decode is mp_decode_to_lua_type.
func (c *mpCursor) decode() (lua.LValue, error) {
	t, err := c.u8()
	if err != nil {
		return nil, err
	}
	switch {
	case t <= 0x7f:
		return lua.LNumber(t), nil
	case t >= 0xe0:
		return lua.LNumber(int8(t)), nil
	case t&0xe0 == 0xa0:
		return c.str(t & 0x1f)
	case t&0xf0 == 0x90:
		return c.array(t & 0x0f)
	case t&0xf0 == 0x80:
		return c.mapping(t & 0x0f)
	}
	switch t {
	case 0xc0:
		return lua.LNil, nil
	case 0xc2:
		return lua.LFalse, nil
	case 0xc3:
		return lua.LTrue, nil
	case 0xcc, 0xcd, 0xce, 0xcf:
		v, err := c.be(1 << int(t-0xcc))
		return lua.LNumber(float64(v)), err
	case 0xd0:
		v, err := c.be(1)
		return lua.LNumber(int8(v)), err
	case 0xd1:
		v, err := c.be(2)
		return lua.LNumber(int16(v)), err
	case 0xd2:
		v, err := c.be(4)
		return lua.LNumber(int32(v)), err
	case 0xd3:
		v, err := c.be(8)
		return lua.LNumber(int64(v)), err
	case 0xca:
		v, err := c.be(4)
		return lua.LNumber(math.Float32frombits(uint32(v))), err
	case 0xcb:
		v, err := c.be(8)
		return lua.LNumber(math.Float64frombits(v)), err
	case 0xd9, 0xda, 0xdb:
		n, err := c.be(1 << int(t-0xd9))
		if err != nil {
			return nil, err
		}
		return c.str(n)
	case 0xdc, 0xdd:
		n, err := c.be(2 << int(t-0xdc))
		if err != nil {
			return nil, err
		}
		return c.array(n)
	case 0xde, 0xdf:
		n, err := c.be(2 << int(t-0xde))
		if err != nil {
			return nil, err
		}
		return c.mapping(n)
	}
	return nil, mpDecodeError(errMPBadFmt)
}

func (c *mpCursor) array(n uint64) (lua.LValue, error) {
	t := c.ls.NewTable()
	for i := uint64(1); i <= n; i++ {
		v, err := c.decode()
		if err != nil {
			return nil, err
		}
		if v != lua.LNil {
			t.RawSetInt(int(i), v)
		}
	}
	return t, nil
}

func (c *mpCursor) mapping(n uint64) (lua.LValue, error) {
	t := c.ls.NewTable()
	for range n {
		k, err := c.decode()
		if err != nil {
			return nil, err
		}
		v, err := c.decode()
		if err != nil {
			return nil, err
		}
		switch {
		case k == lua.LNil:
			return nil, mpDecodeError("table index is nil")
		case k.Type() == lua.LTNumber && math.IsNaN(float64(k.(lua.LNumber))):
			return nil, mpDecodeError("table index is NaN")
		}
		t.RawSet(k, v)
	}
	return t, nil
}

// mpUnpackFull is mp_unpack_full: decodes up to limit objects (0: all) from
// offset; with withOffset it returns the offset after them first (-1 once
// the input is consumed).
func mpUnpackFull(ls *lua.LState, limit, offset int, withOffset bool) int {
	s := ls.CheckString(1)
	if offset < 0 || limit < 0 {
		ls.RaiseError("Invalid request to unpack with offset of %d and limit of %d.", offset, limit)
		return 0
	}
	if offset > len(s) {
		ls.RaiseError("Start offset %d greater than input length %d.", offset, len(s))
		return 0
	}
	c := &mpCursor{ls: ls, buf: s, pos: offset}
	var out []lua.LValue
	for c.pos < len(s) && (limit == 0 || len(out) < limit) {
		v, err := c.decode()
		if err != nil {
			ls.RaiseError("%s", err.Error())
			return 0
		}
		out = append(out, v)
	}
	if withOffset {
		next := c.pos
		if next >= len(s) {
			next = -1
		}
		ls.Push(lua.LNumber(next))
	}
	for _, v := range out {
		ls.Push(v)
	}
	if withOffset {
		return len(out) + 1
	}
	return len(out)
}

func mpUnpack(ls *lua.LState) int { return mpUnpackFull(ls, 0, 0, false) }

func mpUnpackOne(ls *lua.LState) int {
	return mpUnpackFull(ls, 1, ls.OptInt(2, 0), true)
}

func mpUnpackLimit(ls *lua.LState) int {
	return mpUnpackFull(ls, ls.CheckInt(2), ls.OptInt(3, 0), true)
}
