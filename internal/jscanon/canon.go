package jscanon

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"encoding/json"
	"math"
	"math/bits"
	"slices"
	"strconv"
	"sync"
	"unicode/utf8"
)

// maxDepth bounds nesting. V8's JSON.stringify overflows its stack at a few
// thousand levels; staying well below keeps every accepted body one that a
// receiver can re-serialise, and bounds our own recursion.
const maxDepth = 1000

// SyntaxError reports input that JSON.parse would reject (or that is nested
// deeper than the package accepts).
type SyntaxError struct {
	msg    string
	Offset int64 // byte offset in the input where the problem was found
}

func (e *SyntaxError) Error() string {
	return "jscanon: " + e.msg + " at offset " + strconv.FormatInt(e.Offset, 10)
}

// Canonical returns JSON.stringify(JSON.parse(in)) as Node.js would produce it.
// in must be valid JSON (one value, whitespace allowed around it); otherwise an error.
func Canonical(in []byte) ([]byte, error) {
	// The output is rarely much longer than the input, so one allocation
	// usually suffices.
	return AppendCanonical(make([]byte, 0, len(in)+8), in)
}

// Marshal encodes v with encoding/json (no HTML escaping) and canonicalizes the result.
func Marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	// Canonical would undo the escaping anyway; skipping it keeps the
	// intermediate shorter.
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return Canonical(buf.Bytes())
}

// AppendCanonical is Canonical appending to dst (to avoid allocations on hot paths).
// dst and in must not overlap. On error it returns dst with its original length.
func AppendCanonical(dst, in []byte) ([]byte, error) {
	st := statePool.Get().(*state)
	e := encoder{in: in, out: dst, st: st}
	err := e.document()
	out := e.out
	st.release()
	if err != nil {
		return dst, err
	}
	return out, nil
}

// member records one "key":value pair of the object being encoded, as
// offsets into the output, so that the object can be reordered and
// de-duplicated once all of its members are known.
type member struct {
	keyStart int    // offset of the key's opening quote
	keyEnd   int    // offset just past the key's closing quote
	end      int    // offset just past the value
	tag      uint64 // cheap digest of the key; equal keys have equal tags
	idx      uint32
	isIndex  bool
	// src is the member whose bytes stand at this member's position: itself,
	// or the last duplicate of its key. -1 marks a later duplicate, which
	// takes no position of its own.
	src int32
}

// state is the scratch memory of one call, pooled so that steady-state
// calls do not allocate.
type state struct {
	members []member
	scratch []byte
	perm    []int32
}

var statePool = sync.Pool{New: func() any { return new(state) }}

func (s *state) release() {
	// Do not let one huge body pin memory in the pool forever.
	if cap(s.scratch) > 1<<16 || cap(s.members) > 1<<12 || cap(s.perm) > 1<<12 {
		return
	}
	s.members = s.members[:0]
	s.scratch = s.scratch[:0]
	s.perm = s.perm[:0]
	statePool.Put(s)
}

// encoder copies input to output lazily: most of a typical body is already
// canonical, so instead of appending token by token it remembers the start
// of a pending input span (pend) that is known to equal the output, and
// flushes it with one copy when it meets something that must change
// (whitespace, an escape, a number spelling, invalid UTF-8) or when an
// object's keys must be inspected in the output. A pre-scan proving the
// whole input canonical would do the same work as this pass and then copy
// anyway, so there is no separate fast path.
type encoder struct {
	in   []byte
	pos  int
	pend int // in[pend:pos] is output that has not been copied yet
	out  []byte
	st   *state
}

func (e *encoder) flush() {
	e.out = append(e.out, e.in[e.pend:e.pos]...)
	e.pend = e.pos
}

// outPos is the offset in the output that corresponds to e.pos.
func (e *encoder) outPos() int { return len(e.out) + e.pos - e.pend }

func (e *encoder) errorf(msg string) error {
	return &SyntaxError{msg: msg, Offset: int64(e.pos)}
}

func (e *encoder) eofOr(msg string) error {
	if e.pos >= len(e.in) {
		return e.errorf("unexpected end of JSON input")
	}
	return e.errorf(msg)
}

// skipWS skips JSON whitespace, which JSON.stringify never writes. The
// check is split from the loop so that it inlines: compact input has no
// whitespace at all.
func (e *encoder) skipWS() {
	if e.pos < len(e.in) && isWS(e.in[e.pos]) {
		e.dropWS()
	}
}

func (e *encoder) dropWS() {
	e.flush()
	i := e.pos
	for i < len(e.in) && isWS(e.in[i]) {
		i++
	}
	e.pos, e.pend = i, i
}

func isWS(c byte) bool { return c == ' ' || c == '\n' || c == '\r' || c == '\t' }

func (e *encoder) document() error {
	e.skipWS()
	if err := e.value(0); err != nil {
		return err
	}
	e.skipWS()
	if e.pos != len(e.in) {
		return e.errorf("unexpected data after top-level value")
	}
	e.flush()
	return nil
}

func (e *encoder) value(depth int) error {
	if e.pos >= len(e.in) {
		return e.errorf("unexpected end of JSON input")
	}
	switch c := e.in[e.pos]; c {
	case '{':
		return e.object(depth + 1)
	case '[':
		return e.array(depth + 1)
	case '"':
		return e.str()
	case 't':
		return e.literal("true")
	case 'f':
		return e.literal("false")
	case 'n':
		return e.literal("null")
	default:
		if c == '-' || c >= '0' && c <= '9' {
			return e.number()
		}
		return e.errorf("invalid character looking for beginning of value")
	}
}

func (e *encoder) literal(lit string) error {
	if len(e.in)-e.pos < len(lit) || string(e.in[e.pos:e.pos+len(lit)]) != lit {
		return e.errorf("invalid literal")
	}
	e.pos += len(lit)
	return nil
}

func (e *encoder) array(depth int) error {
	if depth > maxDepth {
		return e.errorf("nesting too deep")
	}
	e.pos++ // '['
	e.skipWS()
	if e.pos < len(e.in) && e.in[e.pos] == ']' {
		e.pos++
		return nil
	}
	for {
		if err := e.value(depth); err != nil {
			return err
		}
		e.skipWS()
		if e.pos >= len(e.in) {
			return e.errorf("unexpected end of JSON input")
		}
		switch e.in[e.pos] {
		case ',':
			e.pos++
			e.skipWS()
		case ']':
			e.pos++
			return nil
		default:
			return e.errorf("expected ',' or ']' after array element")
		}
	}
}

func (e *encoder) object(depth int) error {
	if depth > maxDepth {
		return e.errorf("nesting too deep")
	}
	open := e.outPos()
	e.pos++ // '{'
	e.skipWS()
	if e.pos < len(e.in) && e.in[e.pos] == '}' {
		e.pos++
		return nil
	}
	mark := len(e.st.members)
	for {
		if e.pos >= len(e.in) || e.in[e.pos] != '"' {
			return e.eofOr("expected string for object key")
		}
		m := member{keyStart: e.outPos()}
		if err := e.str(); err != nil {
			return err
		}
		m.keyEnd = e.outPos()
		e.skipWS()
		if e.pos >= len(e.in) || e.in[e.pos] != ':' {
			return e.eofOr("expected ':' after object key")
		}
		e.pos++
		e.skipWS()
		if err := e.value(depth); err != nil {
			return err
		}
		m.end = e.outPos()
		e.st.members = append(e.st.members, m)
		e.skipWS()
		if e.pos >= len(e.in) {
			return e.errorf("unexpected end of JSON input")
		}
		if e.in[e.pos] == '}' {
			break
		}
		if e.in[e.pos] != ',' {
			return e.errorf("expected ',' or '}' after object value")
		}
		e.pos++
		e.skipWS()
	}
	if len(e.st.members)-mark > 1 {
		e.finishObject(open, e.st.members[mark:])
	}
	e.st.members = e.st.members[:mark]
	e.pos++ // '}', copied lazily
	return nil
}

// finishObject rewrites the members of the object whose '{' is at
// out[open] into JavaScript property order, dropping duplicates. It leaves
// the output alone in the common case where nothing needs to move.
// Rewriting moves the object's whole content, nested objects included, so
// input crafted to need a rewrite at every level costs time proportional
// to depth times size; maxDepth bounds that factor.
func (e *encoder) finishObject(open int, ms []member) {
	e.flush() // the members must be in e.out to be inspected
	out := e.out

	// Classify keys and check whether index keys already lead in ascending
	// order.
	sorted := true
	sawName := false
	var last uint32
	haveIndex := false
	for i := range ms {
		m := &ms[i]
		m.src = int32(i)
		m.tag = keyTag(out[m.keyStart:m.keyEnd])
		m.idx, m.isIndex = arrayIndex(out[m.keyStart+1 : m.keyEnd-1])
		if m.isIndex {
			if sawName || haveIndex && m.idx <= last {
				sorted = false
			}
			last, haveIndex = m.idx, true
		} else {
			sawName = true
		}
	}

	dup := e.markDuplicates(out, ms)
	if sorted && !dup {
		return
	}

	buf := e.st.scratch[:0]
	perm := e.st.perm[:0]
	for i := range ms {
		if ms[i].src >= 0 && ms[i].isIndex {
			perm = append(perm, int32(i))
		}
	}
	slices.SortFunc(perm, func(a, b int32) int {
		// Index keys are unique once duplicates are marked.
		return cmp.Compare(ms[a].idx, ms[b].idx)
	})
	emit := func(i int32) {
		if len(buf) > 0 {
			buf = append(buf, ',')
		}
		// The key is the same for every duplicate; the surviving value is
		// the last one's.
		s := ms[ms[i].src]
		buf = append(buf, out[s.keyStart:s.end]...)
	}
	for _, i := range perm {
		emit(i)
	}
	for i := range ms {
		if ms[i].src >= 0 && !ms[i].isIndex {
			emit(int32(i))
		}
	}
	e.out = append(out[:open+1], buf...)
	e.st.scratch = buf
	e.st.perm = perm
}

// markDuplicates points each first occurrence of a key at its last
// occurrence and marks the later ones with src -1. Keys are compared in
// their canonical output form, which is a one-to-one encoding of the decoded
// string, so "a" and "\u0061" compare equal.
func (e *encoder) markDuplicates(out []byte, ms []member) bool {
	key := func(m *member) []byte { return out[m.keyStart:m.keyEnd] }
	dup := false
	if len(ms) <= 16 {
		// Small objects, the usual case: pairwise comparison beats sorting.
		for i := 1; i < len(ms); i++ {
			ki := key(&ms[i])
			for j := 0; j < i; j++ {
				if ms[j].tag == ms[i].tag && ms[j].src >= 0 && bytes.Equal(key(&ms[j]), ki) {
					ms[j].src = int32(i)
					ms[i].src = -1
					dup = true
					break
				}
			}
		}
		return dup
	}
	perm := e.st.perm[:0]
	for i := range ms {
		perm = append(perm, int32(i))
	}
	// Sorting by tag first groups equal keys (equal tags) while mostly
	// avoiding byte comparisons.
	slices.SortFunc(perm, func(a, b int32) int {
		if c := cmp.Compare(ms[a].tag, ms[b].tag); c != 0 {
			return c
		}
		if c := bytes.Compare(key(&ms[a]), key(&ms[b])); c != 0 {
			return c
		}
		return int(a - b)
	})
	for i := 0; i < len(perm); {
		j := i + 1
		for j < len(perm) && ms[perm[i]].tag == ms[perm[j]].tag && bytes.Equal(key(&ms[perm[i]]), key(&ms[perm[j]])) {
			j++
		}
		if j-i > 1 {
			dup = true
			first, lastDup := perm[i], perm[j-1]
			ms[first].src = lastDup
			for _, k := range perm[i+1 : j] {
				ms[k].src = -1
			}
		}
		i = j
	}
	e.st.perm = perm[:0]
	return dup
}

// keyTag digests a quoted key from its length and its first and last eight
// bytes, so that duplicate detection compares integers and only looks at
// the bytes of keys that are probably equal.
func keyTag(k []byte) uint64 {
	var a, b uint64
	if len(k) >= 8 {
		a = binary.LittleEndian.Uint64(k)
		b = binary.LittleEndian.Uint64(k[len(k)-8:])
	} else {
		for i, c := range k {
			a |= uint64(c) << (8 * i)
		}
	}
	return (a ^ bits.RotateLeft64(b, 29) ^ uint64(len(k))) * 0x9e3779b97f4a7c15
}

// arrayIndex reports whether the canonical key content s is an ECMAScript
// array index: the canonical decimal spelling of an integer in
// [0, 2^32-2]. Such keys are ordered numerically before all others.
func arrayIndex(s []byte) (uint32, bool) {
	if len(s) == 0 || len(s) > 10 || (s[0] == '0' && len(s) > 1) {
		return 0, false
	}
	var v uint64
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + uint64(c-'0')
	}
	if v > math.MaxUint32-1 {
		return 0, false
	}
	return uint32(v), true
}

// plain marks bytes that appear unchanged inside a canonical string.
var plain = func() (t [256]bool) {
	for c := 0x20; c < 0x80; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

const hexDigits = "0123456789abcdef"

func (e *encoder) str() error {
	in := e.in
	i := e.pos + 1 // past the opening quote
	for {
		// Eight bytes at a time while none needs attention: most strings
		// are plain ASCII.
		for i+8 <= len(in) && !needsAttention(binary.LittleEndian.Uint64(in[i:])) {
			i += 8
		}
		for i < len(in) && plain[in[i]] {
			i++
		}
		if i >= len(in) {
			e.pos = i
			return e.errorf("unexpected end of JSON input in string")
		}
		switch c := in[i]; {
		case c == '"':
			e.pos = i + 1
			return nil
		case c == '\\':
			e.pos = i
			e.flush()
			n, err := e.escape()
			if err != nil {
				return err
			}
			i += n
			e.pos, e.pend = i, i
		case c < 0x20:
			e.pos = i
			return e.errorf("invalid control character in string")
		default:
			if r, size := utf8.DecodeRune(in[i:]); r != utf8.RuneError || size > 1 {
				i += size // valid UTF-8 is copied as is
				continue
			}
			e.pos = i
			e.flush()
			e.out = append(e.out, "\uFFFD"...)
			i += invalidLen(in[i:])
			e.pos, e.pend = i, i
		}
	}
}

// needsAttention reports whether any of the eight bytes in x is a control
// character, '"', '\\' or non-ASCII. It may report true spuriously for a
// byte above one that truly needs attention (borrow propagation), which is
// harmless because the caller then goes byte by byte from the start.
func needsAttention(x uint64) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	lt20 := (x - ones*0x20) & ^x
	q := x ^ (ones * '"')
	bs := x ^ (ones * '\\')
	return (lt20|(q-ones)&^q|(bs-ones)&^bs|x)&highs != 0
}

// invalidLen returns how many bytes at the start of b, which does not begin
// with a valid UTF-8 sequence, a WHATWG UTF-8 decoder (as Node uses for
// request bodies) replaces with a single U+FFFD: the maximal prefix of a
// well-formed sequence, at least one byte.
func invalidLen(b []byte) int {
	lo, hi := byte(0x80), byte(0xBF)
	var need int
	switch c := b[0]; {
	case c >= 0xC2 && c <= 0xDF:
		need = 1
	case c == 0xE0:
		need, lo = 2, 0xA0
	case c == 0xED:
		need, hi = 2, 0x9F
	case c >= 0xE1 && c <= 0xEF:
		need = 2
	case c == 0xF0:
		need, lo = 3, 0x90
	case c == 0xF4:
		need, hi = 3, 0x8F
	case c >= 0xF1 && c <= 0xF3:
		need = 3
	default:
		return 1
	}
	i := 1
	for ; i <= need && i < len(b); i++ {
		if b[i] < lo || b[i] > hi {
			break
		}
		lo, hi = 0x80, 0xBF
	}
	return i
}

// escape decodes the escape sequence at e.pos, appends its canonical form
// and returns its length in the input.
func (e *encoder) escape() (int, error) {
	in := e.in[e.pos:]
	if len(in) < 2 {
		return 0, e.errorf("unexpected end of JSON input in string escape")
	}
	switch c := in[1]; c {
	case '"', '\\', 'b', 'f', 'n', 'r', 't':
		e.out = append(e.out, '\\', c)
		return 2, nil
	case '/':
		e.out = append(e.out, '/')
		return 2, nil
	case 'u':
	default:
		return 0, e.errorf("invalid escape in string")
	}
	r, ok := hex4(in[2:])
	if !ok {
		return 0, e.errorf("invalid \\u escape in string")
	}
	switch {
	case r >= 0xD800 && r < 0xDC00:
		// A high surrogate pairs only with an immediately following
		// escaped low surrogate; raw UTF-8 cannot encode one.
		if len(in) >= 12 && in[6] == '\\' && in[7] == 'u' {
			if r2, ok := hex4(in[8:]); ok && r2 >= 0xDC00 && r2 < 0xE000 {
				e.out = utf8.AppendRune(e.out, 0x10000+(r-0xD800)<<10+(r2-0xDC00))
				return 12, nil
			}
		}
		e.out = appendU(e.out, r)
	case r >= 0xDC00 && r < 0xE000:
		e.out = appendU(e.out, r)
	case r < 0x20:
		e.out = appendControl(e.out, byte(r))
	case r == '"' || r == '\\':
		e.out = append(e.out, '\\', byte(r))
	default:
		e.out = utf8.AppendRune(e.out, r)
	}
	return 6, nil
}

func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range b[:4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

func appendU(b []byte, r rune) []byte {
	return append(b, '\\', 'u', hexDigits[r>>12&0xF], hexDigits[r>>8&0xF], hexDigits[r>>4&0xF], hexDigits[r&0xF])
}

// appendControl writes a character below U+0020 the way JSON.stringify
// does: the five short escapes, \u00xx for the rest.
func appendControl(b []byte, c byte) []byte {
	switch c {
	case '\b':
		return append(b, '\\', 'b')
	case '\f':
		return append(b, '\\', 'f')
	case '\n':
		return append(b, '\\', 'n')
	case '\r':
		return append(b, '\\', 'r')
	case '\t':
		return append(b, '\\', 't')
	}
	return appendU(b, rune(c))
}

func (e *encoder) number() error {
	in := e.in
	start := e.pos
	i := start
	neg := in[i] == '-'
	if neg {
		i++
	}
	switch {
	case i >= len(in):
		e.pos = i
		return e.errorf("unexpected end of JSON input in number")
	case in[i] == '0':
		i++
	case in[i] >= '1' && in[i] <= '9':
		for i++; i < len(in) && in[i] >= '0' && in[i] <= '9'; i++ {
		}
	default:
		e.pos = i
		return e.errorf("invalid character in number")
	}
	intEnd := i
	simple := true
	if i < len(in) && in[i] == '.' {
		simple = false
		i++
		d := i
		for i < len(in) && in[i] >= '0' && in[i] <= '9' {
			i++
		}
		if i == d {
			e.pos = i
			return e.eofOr("expected digit after decimal point")
		}
	}
	if i < len(in) && (in[i] == 'e' || in[i] == 'E') {
		simple = false
		i++
		if i < len(in) && (in[i] == '+' || in[i] == '-') {
			i++
		}
		d := i
		for i < len(in) && in[i] >= '0' && in[i] <= '9' {
			i++
		}
		if i == d {
			e.pos = i
			return e.eofOr("expected digit in exponent")
		}
	}
	e.pos = i
	digits := intEnd - start
	if neg {
		digits--
	}
	// Integers of up to 15 digits are exact doubles whose shortest
	// spelling is the literal itself, so they stay in the pending span.
	// -0 is the exception: it prints as 0.
	if simple && digits <= 15 && !(neg && in[start+1] == '0') {
		return nil
	}
	if !simple && plainDecimal(in[start:i], intEnd-start) {
		return nil
	}
	e.pos = start
	e.flush()
	e.out = appendNumber(e.out, in[start:i])
	e.pos, e.pend = i, i
	return nil
}

// plainDecimal reports whether lit, a grammatical JSON number with a
// fraction or exponent whose integer part ends at intEnd, is already spelt
// as Number::toString spells it, sparing a parse and a format for the
// common floats of webhook bodies such as 0.92 or 87.25. That holds for
// int.frac without exponent when the fraction does not end in 0, there are
// at most 15 significant digits and a zero integer part is followed by at
// most five zeros. At most 15 significant digits (DBL_DIG) means every such
// decimal maps to a distinct double and back, so the literal's digits are
// the unique shortest round-trip digits; the zero limit keeps the value at
// or above 1e-6, where toString stops using plain notation.
func plainDecimal(lit []byte, intEnd int) bool {
	if intEnd >= len(lit) || lit[intEnd] != '.' || lit[len(lit)-1] == '0' {
		return false
	}
	frac := lit[intEnd+1:]
	for _, c := range frac {
		if c == 'e' || c == 'E' {
			return false
		}
	}
	intDigits := lit[:intEnd]
	if intDigits[0] == '-' {
		intDigits = intDigits[1:]
	}
	if len(intDigits) == 1 && intDigits[0] == '0' {
		z := 0
		for z < len(frac) && frac[z] == '0' {
			z++
		}
		return z <= 5 && len(frac)-z <= 15
	}
	return len(intDigits)+len(frac) <= 15
}

// appendNumber appends the ECMAScript Number::toString of the double nearest
// to the JSON number lit.
func appendNumber(dst, lit []byte) []byte {
	// lit is grammatical JSON, which ParseFloat accepts; the only possible
	// error is ErrRange, with ±Inf on overflow and a correctly rounded
	// (possibly zero) result on underflow.
	f, _ := strconv.ParseFloat(string(lit), 64)
	return appendJSNumber(dst, f)
}

// appendJSNumber implements Number::toString(10) as JSON.stringify uses it,
// with non-finite values written as null.
func appendJSNumber(dst []byte, f float64) []byte {
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return append(dst, "null"...)
	}
	if f == 0 {
		return append(dst, '0') // also -0
	}
	var tmp [32]byte
	// Shortest round-trip digits, choosing the closest when several qualify,
	// which is what ECMAScript asks for.
	b := strconv.AppendFloat(tmp[:0], f, 'e', -1, 64)
	if b[0] == '-' {
		dst = append(dst, '-')
		b = b[1:]
	}
	// b is d[.ddd]e±xx
	ePos := bytes.IndexByte(b, 'e')
	var digs [20]byte
	k := 0
	for _, c := range b[:ePos] {
		if c != '.' {
			digs[k] = c
			k++
		}
	}
	exp, _ := strconv.Atoi(string(b[ePos+1:]))
	n := exp + 1 // value = 0.d1d2...dk × 10^n
	d := digs[:k]
	switch {
	case k <= n && n <= 21:
		dst = append(dst, d...)
		for range n - k {
			dst = append(dst, '0')
		}
	case 0 < n && n <= 21:
		dst = append(dst, d[:n]...)
		dst = append(dst, '.')
		dst = append(dst, d[n:]...)
	case -6 < n && n <= 0:
		dst = append(dst, '0', '.')
		for range -n {
			dst = append(dst, '0')
		}
		dst = append(dst, d...)
	default:
		dst = append(dst, d[0])
		if k > 1 {
			dst = append(dst, '.')
			dst = append(dst, d[1:]...)
		}
		dst = append(dst, 'e')
		if n-1 >= 0 {
			dst = append(dst, '+')
		}
		dst = strconv.AppendInt(dst, int64(n-1), 10)
	}
	return dst
}
