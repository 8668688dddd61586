package logfmt

import (
	"encoding"
	"fmt"
	"log/slog"
	"reflect"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"
)

// state is slog's handleState for text output: the line being built, the
// key prefix of open groups, and the groups ReplaceAttr is shown.
type state struct {
	buf    []byte
	prefix []byte
	// groups is passed to ReplaceAttr. nil while formatting the built-in
	// attributes (and then groups opened by ReplaceAttr's results are not
	// collected), non-nil otherwise, as slog does.
	groups []string
	sep    bool // write a space before the next key
	rep    func([]string, slog.Attr) slog.Attr
	reps   *[]slog.Attr // if non-nil, ReplaceAttr's results are appended
}

// noGroups is the empty, non-nil groups slice slog passes outside groups.
var noGroups = []string{}

var statePool = sync.Pool{New: func() any {
	return &state{buf: make([]byte, 0, 1024)}
}}

func newState(rep func([]string, slog.Attr) slog.Attr) *state {
	s := statePool.Get().(*state)
	s.rep = rep
	return s
}

func (s *state) free() {
	// Don't keep a huge line's buffer around, as slog's buffer package.
	const maxBufferSize = 16 << 10
	if cap(s.buf) > maxBufferSize {
		return
	}
	s.buf = s.buf[:0]
	s.prefix = s.prefix[:0]
	s.groups = nil
	s.sep = false
	s.rep = nil
	s.reps = nil
	statePool.Put(s)
}

func (s *state) appendSep() {
	if s.sep {
		s.buf = append(s.buf, ' ')
	}
}

// appendRecordAttr is appendAttr for an attribute that simple has let
// through, so not a LogValuer or group; it returns true for Record.Attrs.
func (s *state) appendRecordAttr(a slog.Attr) bool {
	if s.rep != nil {
		s.appendAttr(a, slog.KindString) // any kind but LogValuer and group
		return true
	}
	k := a.Value.Kind()
	if k == slog.KindAny {
		s.appendAttr(a, k) // the zero Attr, which simple lets through
		return true
	}
	s.appendKey(a.Key)
	s.appendValue(k, a.Value)
	return true
}

// appendAttrs reports whether any of as was appended.
func (s *state) appendAttrs(as []slog.Attr) bool {
	nonEmpty := false
	for _, a := range as {
		if s.appendAttr(a, a.Value.Kind()) {
			nonEmpty = true
		}
	}
	return nonEmpty
}

// appendAttr is slog's handleState.appendAttr, quirks included: a group
// whose members were all dropped stays open, so its name prefixes the keys
// that follow. It asks for the value's kind as seldom as it can: that is a
// type switch, and it was the largest cost in profiles.
//
// k is a.Value.Kind(), or for a caller that knows a.Value is neither a
// LogValuer nor a group, any other kind.
func (s *state) appendAttr(a slog.Attr, k slog.Kind) bool {
	if k == slog.KindLogValuer {
		a.Value = a.Value.Resolve()
		k = a.Value.Kind()
	}
	if s.rep != nil && k != slog.KindGroup {
		a = s.rep(s.groups, a)
		if s.reps != nil {
			*s.reps = append(*s.reps, a)
		}
		k = a.Value.Kind()
		if k == slog.KindLogValuer {
			a.Value = a.Value.Resolve()
			k = a.Value.Kind()
		}
	}
	switch k {
	case slog.KindAny:
		x := a.Value.Any()
		if x == nil && a.Key == "" {
			return false // the zero Attr
		}
		if src, ok := x.(*slog.Source); ok {
			if src == nil || *src == (slog.Source{}) {
				return false
			}
			a.Value = slog.StringValue(fmt.Sprintf("%s:%d", src.File, src.Line))
			k = slog.KindString
		}
	case slog.KindGroup:
		attrs := a.Value.Group()
		if len(attrs) > 0 {
			pos := len(s.buf)
			if a.Key != "" {
				s.openGroup(a.Key)
			}
			if !s.appendAttrs(attrs) {
				s.buf = s.buf[:pos]
				return false
			}
			if a.Key != "" {
				s.closeGroup(a.Key)
			}
		}
		return true
	}
	s.appendKey(a.Key)
	s.appendValue(k, a.Value)
	return true
}

func (s *state) openGroup(name string) {
	s.prefix = append(s.prefix, name...)
	s.prefix = append(s.prefix, '.')
	if s.groups != nil {
		s.groups = append(s.groups, name)
	}
}

func (s *state) closeGroup(name string) {
	s.prefix = s.prefix[:len(s.prefix)-len(name)-1]
	s.sep = true
	if s.groups != nil {
		s.groups = s.groups[:len(s.groups)-1]
	}
}

func (s *state) appendKey(key string) {
	s.appendSep()
	if len(s.prefix) > 0 {
		// slog's appendTwoStrings: quote prefix+key as a whole.
		if !needsQuoting(string(s.prefix)) && !needsQuoting(key) {
			s.buf = append(s.buf, s.prefix...)
			s.buf = append(s.buf, key...)
		} else {
			s.buf = strconv.AppendQuote(s.buf, string(s.prefix)+key)
		}
	} else {
		s.appendString(key)
	}
	s.buf = append(s.buf, '=')
	s.sep = true
}

func (s *state) appendString(str string) {
	if needsQuoting(str) {
		s.buf = strconv.AppendQuote(s.buf, str)
	} else {
		s.buf = append(s.buf, str...)
	}
}

// appendValue is slog's appendTextValue for a resolved, non-group value of
// kind k.
func (s *state) appendValue(k slog.Kind, v slog.Value) {
	switch k {
	case slog.KindString:
		s.appendString(v.String())
	case slog.KindInt64:
		s.buf = strconv.AppendInt(s.buf, v.Int64(), 10)
	case slog.KindUint64:
		s.buf = strconv.AppendUint(s.buf, v.Uint64(), 10)
	case slog.KindFloat64:
		s.buf = strconv.AppendFloat(s.buf, v.Float64(), 'g', -1, 64)
	case slog.KindBool:
		s.buf = strconv.AppendBool(s.buf, v.Bool())
	case slog.KindDuration:
		s.buf = append(s.buf, v.Duration().String()...)
	case slog.KindTime:
		s.buf = appendTime(s.buf, v.Time())
	case slog.KindAny:
		s.appendAny(v.Any())
	default:
		// Not reached: groups are expanded and LogValuers resolved first.
		s.buf = fmt.Append(s.buf, v.Any())
	}
}

// appendAny formats a KindAny value as slog does, recovering from panics
// the same way.
func (s *state) appendAny(x any) {
	defer func() {
		if r := recover(); r != nil {
			if v := reflect.ValueOf(x); v.Kind() == reflect.Pointer && v.IsNil() {
				s.appendString("<nil>")
				return
			}
			s.appendString(fmt.Sprintf("!PANIC: %v", r))
		}
	}()
	if l, ok := x.(slog.Level); ok {
		// Level.MarshalText is Level.String, without the allocations.
		s.appendString(l.String())
		return
	}
	if tm, ok := x.(encoding.TextMarshaler); ok {
		data, err := tm.MarshalText()
		if err != nil {
			s.appendString(fmt.Sprintf("!ERROR:%v", err))
			return
		}
		s.appendString(string(data))
		return
	}
	if bs, ok := byteSlice(x); ok {
		s.buf = strconv.AppendQuote(s.buf, string(bs))
		return
	}
	s.appendString(fmt.Sprintf("%+v", x))
}

// byteSlice is slog's: x as a []byte if its underlying type is one.
func byteSlice(x any) ([]byte, bool) {
	if bs, ok := x.([]byte); ok {
		return bs, true
	}
	t := reflect.TypeOf(x)
	if t != nil && t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Uint8 {
		return reflect.ValueOf(x).Bytes(), true
	}
	return nil, false
}

// quoteByte marks the ASCII bytes that make slog quote a string: controls,
// space, '"' and '='. A backslash alone does not.
var quoteByte = func() (t [utf8.RuneSelf]bool) {
	for b := range utf8.RuneSelf {
		t[b] = b < ' ' || b == ' ' || b == '"' || b == '='
	}
	return t
}()

// needsQuoting is slog's text handler rule. It skips eight bytes at a time
// while none of them is special, which is most of any request line.
func needsQuoting(s string) bool {
	if len(s) == 0 {
		return true
	}
	i := 0
	for ; i+8 <= len(s); i += 8 {
		x := uint64(s[i]) | uint64(s[i+1])<<8 | uint64(s[i+2])<<16 | uint64(s[i+3])<<24 |
			uint64(s[i+4])<<32 | uint64(s[i+5])<<40 | uint64(s[i+6])<<48 | uint64(s[i+7])<<56
		if mayNeedQuoting(x) {
			break // the byte loop decides, from this word on
		}
	}
	for i < len(s) {
		b := s[i]
		if b < utf8.RuneSelf {
			if quoteByte[b] {
				return true
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError || unicode.IsSpace(r) || !unicode.IsPrint(r) {
			return true
		}
		i += size
	}
	return false
}

// mayNeedQuoting reports whether any of x's bytes is non-ASCII, below '!'
// (controls and space), '"' or '='. It may say true for none (a borrow
// from a byte that is), never false for one.
func mayNeedQuoting(x uint64) bool {
	const (
		ones  = 0x0101010101010101
		highs = 0x8080808080808080
	)
	below := (x - '!'*ones) &^ x // high bit set where a byte < '!'
	quote := x ^ '"'*ones
	quote = (quote - ones) &^ quote // high bit set where a byte == '"'
	eq := x ^ '='*ones
	eq = (eq - ones) &^ eq
	return (x|below|quote|eq)&highs != 0
}

// lastSecond caches the text of the second last formatted, so that the
// next times in the same second and location copy it instead of computing
// the date again.
type lastSecond struct {
	sec    int64
	loc    *time.Location
	prefix [len("2006-01-02T15:04:05")]byte
	zone   string // "Z" or "+hh:mm"
}

var second atomic.Pointer[lastSecond]

// appendTime writes t as appendRFC3339Millis does.
func appendTime(b []byte, t time.Time) []byte {
	sec, loc := t.Unix(), t.Location()
	c := second.Load()
	if c == nil || c.sec != sec || c.loc != loc {
		n := len(b)
		b = appendRFC3339Millis(b, t)
		// Cache only the common shape: a year of four digits.
		if f := b[n:]; len(f) > 23 && f[10] == 'T' && f[19] == '.' {
			c = &lastSecond{sec: sec, loc: loc, zone: string(f[23:])}
			copy(c.prefix[:], f)
			second.Store(c)
		}
		return b
	}
	ms := t.Nanosecond() / 1e6
	b = append(b, c.prefix[:]...)
	b = append(b, '.', byte('0'+ms/100), byte('0'+ms/10%10), byte('0'+ms%10))
	return append(b, c.zone...)
}

// appendRFC3339Millis is slog's, which truncates RFC3339Nano to
// milliseconds; its digit-dropping assumes a four-digit year, and so do we.
func appendRFC3339Millis(b []byte, t time.Time) []byte {
	const prefixLen = len("2006-01-02T15:04:05.000")
	n := len(b)
	t = t.Truncate(time.Millisecond).Add(time.Millisecond / 10)
	b = t.AppendFormat(b, time.RFC3339Nano)
	b = append(b[:n+prefixLen], b[n+prefixLen+1:]...) // drop the 4th digit
	return b
}
