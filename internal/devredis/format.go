package devredis

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	lua "github.com/yuin/gopher-lua"
)

// luaFormat is Lua 5.1's string.format, which formats with C's printf.
// gopher-lua's version hands the format to Go's fmt, which differs for
// infinities and NaN ("+Inf"), %s of numbers, %q, %c, %u and negative %x.
func luaFormat(ls *lua.LState) int {
	f := ls.CheckString(1)
	var out strings.Builder
	arg := 1
	for i := 0; i < len(f); i++ {
		if f[i] != '%' {
			out.WriteByte(f[i])
			continue
		}
		i++
		if i < len(f) && f[i] == '%' {
			out.WriteByte('%')
			continue
		}
		start := i
		for i < len(f) && strings.IndexByte("-+ #0", f[i]) >= 0 {
			i++
		}
		flags := f[start:i]
		ws := i
		for i < len(f) && f[i] >= '0' && f[i] <= '9' {
			i++
		}
		width, _ := strconv.Atoi(f[ws:i])
		prec := -1
		if i < len(f) && f[i] == '.' {
			i++
			ps := i
			for i < len(f) && f[i] >= '0' && f[i] <= '9' {
				i++
			}
			prec, _ = strconv.Atoi(f[ps:i])
		}
		if i >= len(f) || i-start > 6 {
			ls.RaiseError("invalid format (repeated flags or too long)")
		}
		spec := f[start-1 : i]
		verb := f[i]
		arg++
		var piece string
		switch verb {
		case 'd', 'i':
			piece = fmt.Sprintf(spec+"d", int64(luaToInt(checkNumber(ls, arg))))
		case 'o', 'x', 'X':
			piece = fmt.Sprintf(spec+string(verb), cToUint64(checkNumber(ls, arg)))
		case 'u':
			piece = fmt.Sprintf(spec+"d", cToUint64(checkNumber(ls, arg)))
		case 'c':
			piece = pad(string([]byte{byte(luaToInt(checkNumber(ls, arg)))}), flags, width)
		case 'e', 'E', 'f', 'g', 'G':
			n := checkNumber(ls, arg)
			if math.IsInf(n, 0) || math.IsNaN(n) {
				s := number2str(n)
				if !strings.HasPrefix(s, "-") && strings.Contains(flags, "+") {
					s = "+" + s
				} else if !strings.HasPrefix(s, "-") && strings.Contains(flags, " ") {
					s = " " + s
				}
				if verb == 'E' || verb == 'G' {
					s = strings.ToUpper(s)
				}
				piece = pad(s, flags, width)
				break
			}
			if prec < 0 {
				spec += ".6" // C's default; Go's %g would print the shortest form
			}
			piece = fmt.Sprintf(spec+string(verb), n)
		case 's':
			var s string
			switch v := ls.Get(arg).(type) {
			case lua.LString:
				s = string(v)
			case lua.LNumber:
				s = number2str(float64(v))
			default:
				ls.ArgError(arg, "string expected, got "+ls.Get(arg).Type().String())
			}
			if prec < 0 && len(s) >= 100 {
				out.WriteString(s) // Lua adds a long string whole, width ignored
				continue
			}
			if i := strings.IndexByte(s, 0); i >= 0 {
				s = s[:i]
			}
			if prec >= 0 && prec < len(s) {
				s = s[:prec]
			}
			piece = pad(s, flags, width)
		case 'q':
			out.WriteString(luaQuote(ls.CheckString(arg)))
			continue
		default:
			ls.RaiseError("invalid option '%%%c' to 'format'", verb)
		}
		// Lua appends what sprintf wrote up to its first NUL
		if i := strings.IndexByte(piece, 0); i >= 0 {
			piece = piece[:i]
		}
		out.WriteString(piece)
	}
	ls.Push(lua.LString(out.String()))
	return 1
}

// cToUint64 is C's (unsigned long) cast of a double as gcc compiles it for
// x86-64.
func cToUint64(f float64) uint64 {
	switch {
	case math.IsNaN(f):
		return 0
	case f < 1<<63:
		return uint64(luaToInt(f))
	case f-(1<<63) < 1<<63:
		return uint64(int64(f-(1<<63))) ^ 1<<63
	}
	return 0
}

// checkNumber is luaL_checknumber: a number, or a string that reads as one.
func checkNumber(ls *lua.LState, n int) float64 {
	switch v := ls.Get(n).(type) {
	case lua.LNumber:
		return float64(v)
	case lua.LString:
		if f, ok := str2number(string(v)); ok {
			return f
		}
	}
	if ls.Get(n) == lua.LNil && n > ls.GetTop() {
		ls.ArgError(n, "number expected, got no value")
	}
	ls.ArgError(n, "number expected, got "+ls.Get(n).Type().String())
	return 0
}

// pad pads s with spaces to width, on the right with the '-' flag, by
// bytes as C does.
func pad(s, flags string, width int) string {
	if len(s) >= width {
		return s
	}
	if strings.Contains(flags, "-") {
		return s + strings.Repeat(" ", width-len(s))
	}
	return strings.Repeat(" ", width-len(s)) + s
}

// luaQuote is %q of Lua 5.1 (addquoted).
func luaQuote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '"', '\\', '\n':
			b.WriteByte('\\')
			b.WriteByte(c)
		case '\r':
			b.WriteString(`\r`)
		case 0:
			b.WriteString(`\000`)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}
