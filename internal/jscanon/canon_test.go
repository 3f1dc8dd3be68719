package jscanon

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"strconv"
	"strings"
	"testing"
)

// The wants below are what Node.js prints for
// JSON.stringify(JSON.parse(in)); the differential test checks the same
// property on random input.
var canonicalTests = []struct {
	name, in, want string
}{
	// Whitespace is never written.
	{"whitespace", " \t\r\n{ \"a\" : [ 1 , 2 ] , \"b\" : { } , \"c\" : [ ] } \n", `{"a":[1,2],"b":{},"c":[]}`},
	{"literals", `[true,false,null]`, `[true,false,null]`},
	{"top-level scalar", ` "x" `, `"x"`},

	// HTML characters and U+2028/U+2029 are raw in JavaScript.
	{"html escapes decoded", `"\u003cb\u003e \u0026 \u003E"`, `"<b> & >"`},
	{"html raw kept", `"<b> & </b>"`, `"<b> & </b>"`},
	{"line separators escaped", `"a\u2028b\u2029c"`, "\"a\u2028b\u2029c\""},
	{"line separators raw", "\"a\u2028b\u2029c\"", "\"a\u2028b\u2029c\""},

	// Escapes are decoded and re-encoded the JSON.stringify way.
	{"unicode escape of letter", `"\u0041\u00e9"`, `"Aé"`},
	{"escaped slash", `"a\/b"`, `"a/b"`},
	{"short escapes kept", `"\b\f\n\r\t\"\\"`, `"\b\f\n\r\t\"\\"`},
	{"short escapes from unicode", `"\u0008\u000C\u000a\u000D\u0009\u0022\u005C"`, `"\b\f\n\r\t\"\\"`},
	{"other controls lowercase hex", `"\u0000\u001F\u000B\u001b"`, `"\u0000\u001f\u000b\u001b"`},
	{"DEL raw", `"\u007f"`, "\"\x7f\""},
	{"surrogate pair escape", `"\uD83D\uDE00"`, `"😀"`},
	{"surrogate pair lowercase", `"\ud83d\ude00"`, `"😀"`},
	{"lone high surrogate", `"\uD83Dx"`, `"\ud83dx"`},
	{"lone low surrogate", `"\uDE00"`, `"\ude00"`},
	{"reversed pair", `"\uDE00\uD83D"`, `"\ude00\ud83d"`},
	{"high then pair", `"\uD83D\uD83D\uDE00"`, `"\ud83d😀"`},
	{"high then non-surrogate escape", `"\uD83D\u0041"`, `"\ud83dA"`},
	{"raw non-BMP", `"😀"`, `"😀"`},
	{"BOM inside string", "\"\uFEFF\"", "\"\uFEFF\""},
	{"escaped FFFE", `"\uFFFE\uFFFF"`, "\"\uFFFE\uFFFF\""},

	// Invalid UTF-8 decodes as Node's WHATWG decoder does: one U+FFFD per
	// maximal invalid subsequence.
	{"invalid lone continuation", "\"a\x80b\"", "\"a\uFFFDb\""},
	{"invalid truncated 4-byte", "\"\xF0\x9F\x98\"", "\"\uFFFD\""},
	{"invalid encoded surrogate", "\"\xED\xA0\x80\"", "\"\uFFFD\uFFFD\uFFFD\""},
	{"invalid overlong", "\"\xC0\xAF\"", "\"\uFFFD\uFFFD\""},
	{"invalid above max", "\"\xF4\x90\x80\x80\"", "\"\uFFFD\uFFFD\uFFFD\uFFFD\""},
	{"invalid E0 overlong", "\"\xE0\x80\x9F\"", "\"\uFFFD\uFFFD\uFFFD\""},
	{"invalid truncated then quote", "\"\xE2\x82\"", "\"\uFFFD\""},
	{"invalid F8", "\"\xF8\xFE\xFF\"", "\"\uFFFD\uFFFD\uFFFD\""},
	{"raw FFFD kept", "\"\uFFFD\"", "\"\uFFFD\""},

	// Numbers follow Number::toString.
	{"trailing zero fraction", `1.0`, `1`},
	{"fraction", `[1.5,-2.25,0.1]`, `[1.5,-2.25,0.1]`},
	{"exponent", `1e5`, `100000`},
	{"capital exponent", `1E+2`, `100`},
	{"negative exponent", `25e-1`, `2.5`},
	{"negative zero", `-0`, `0`},
	{"negative zero fraction", `-0.0e7`, `0`},
	{"zero exponent", `0e0`, `0`},
	{"small plain", `0.000001`, `0.000001`},
	{"small exponential", `0.0000001`, `1e-7`},
	{"small plain digits", `0.00000123`, `0.00000123`},
	{"small exponential digits", `0.000000123`, `1.23e-7`},
	{"exponential fraction", `1.5e-7`, `1.5e-7`},
	{"just below 1e21", `999999999999999900000`, `999999999999999900000`},
	{"1e21", `1e21`, `1e+21`},
	{"1e21 spelled", `1000000000000000000000`, `1e+21`},
	{"big with fraction digits", `123456789012345678901234`, `1.2345678901234569e+23`},
	{"big integer rounds", `12345678901234567890`, `12345678901234567000`},
	{"2^53+1", `9007199254740993`, `9007199254740992`},
	{"15 digits", `999999999999999`, `999999999999999`},
	{"16 digits", `1234567890123456`, `1234567890123456`},
	{"17 digits", `12345678901234567`, `12345678901234568`},
	{"negative big", `-12345678901234567890`, `-12345678901234567000`},
	{"0.1+0.2 spelling", `0.30000000000000004`, `0.30000000000000004`},
	{"long fraction rounds", `0.1000000000000000055511151231257827`, `0.1`},
	{"max double", `1.7976931348623157e308`, `1.7976931348623157e+308`},
	{"min subnormal", `5e-324`, `5e-324`},
	{"below min subnormal", `2e-324`, `0`},
	{"underflow", `1e-400`, `0`},
	{"negative underflow", `-1e-400`, `0`},
	{"overflow", `1e400`, `null`},
	{"negative overflow", `-1e400`, `null`},
	{"overflow in array", `[1e309,-1E+999]`, `[null,null]`},
	{"huge integer overflow", `1` + strings.Repeat("0", 400), `null`},
	{"long zero fraction", `0.` + strings.Repeat("0", 400) + `1`, `0`},
	{"exp 100", `1e100`, `1e+100`},
	{"15 significant fraction digits", `0.123456789012345`, `0.123456789012345`},
	{"19 significant fraction digits", `0.1234567890123456789`, `0.12345678901234568`},
	{"15 significant mixed", `123456789.123456`, `123456789.123456`},
	{"17 significant mixed", `1234567890.1234567`, `1234567890.1234567`},
	{"16 digits not exact", `9.999999999999999`, `9.999999999999998`},
	{"small negative plain", `-0.0000012345`, `-0.0000012345`},
	{"small below plain range", `0.000000999`, `9.99e-7`},
	{"fraction trailing zero", `12.50`, `12.5`},
	{"fraction exp", `1.25e+25`, `1.25e+25`},

	// Object key order and duplicates.
	{"index keys first", `{"b":1,"a":2,"1":3,"0":4}`, `{"0":4,"1":3,"b":1,"a":2}`},
	{"index keys numeric order", `{"10":1,"9":2,"100":3,"2":4}`, `{"2":4,"9":2,"10":1,"100":3}`},
	{"not index keys", `{"b":1,"01":2,"-1":3,"1.0":4," 1":5,"1e3":6,"+1":7}`, `{"b":1,"01":2,"-1":3,"1.0":4," 1":5,"1e3":6,"+1":7}`},
	{"largest index", `{"x":1,"4294967294":2}`, `{"4294967294":2,"x":1}`},
	{"2^32-1 is not an index", `{"x":1,"4294967295":2,"4294967296":3,"0":4}`, `{"0":4,"x":1,"4294967295":2,"4294967296":3}`},
	{"escaped digit key is index", `{"a":1,"\u0031":2}`, `{"1":2,"a":1}`},
	{"duplicate last value first position", `{"a":1,"b":2,"a":3}`, `{"a":3,"b":2}`},
	{"triple duplicate", `{"a":1,"b":2,"a":3,"c":4,"a":5}`, `{"a":5,"b":2,"c":4}`},
	{"duplicate via escape", `{"a":1,"\u0061":2}`, `{"a":2}`},
	{"duplicate index keys", `{"1":"x","0":"y","1":"z"}`, `{"0":"y","1":"z"}`},
	{"duplicate nested value", `{"a":{"z":1,"y":2},"a":[3]}`, `{"a":[3]}`},
	{"nested reorder", `{"k":{"b":1,"2":2},"1":{"x":{"9":0,"8":0}}}`, `{"1":{"x":{"8":0,"9":0}},"k":{"2":2,"b":1}}`},
	{"proto is plain key", `{"__proto__":{"a":1},"b":2}`, `{"__proto__":{"a":1},"b":2}`},
	{"empty key", `{"":1,"0":2}`, `{"0":2,"":1}`},
	{"sorted index keys untouched", `{"0":1,"1":2,"x":3}`, `{"0":1,"1":2,"x":3}`},
	{"whitespace and reorder", `{ "b" : 1 , "0" : [ 1.0 ] }`, `{"0":[1],"b":1}`},
}

func TestCanonical(t *testing.T) {
	for _, tc := range canonicalTests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Canonical([]byte(tc.in))
			if err != nil {
				t.Fatalf("Canonical(%q): %v", tc.in, err)
			}
			if string(got) != tc.want {
				t.Fatalf("Canonical(%q)\n got %q\nwant %q", tc.in, got, tc.want)
			}
			// The output is a fixed point: sending it and having the
			// receiver re-serialise it gives the same bytes.
			again, err := Canonical(got)
			if err != nil || !bytes.Equal(again, got) {
				t.Fatalf("not idempotent: %q -> %q, %v", got, again, err)
			}
		})
	}
}

func TestAppendCanonical(t *testing.T) {
	dst := []byte("prefix:")
	got, err := AppendCanonical(dst, []byte(`{"b":1,"0":1e5}`))
	if err != nil {
		t.Fatal(err)
	}
	if want := `prefix:{"0":100000,"b":1}`; string(got) != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	got, err = AppendCanonical(dst, []byte(`{"b":1,`))
	if err == nil {
		t.Fatal("no error for truncated input")
	}
	if string(got) != "prefix:" {
		t.Fatalf("on error got %q, want dst unchanged", got)
	}
}

func TestLargeObjectDuplicates(t *testing.T) {
	// Objects above the pairwise-comparison size take the sorting path.
	var in, want strings.Builder
	in.WriteString("{")
	want.WriteString("{")
	for i := 0; i < 40; i++ {
		if i > 0 {
			in.WriteString(",")
		}
		in.WriteString(`"k` + strconv.Itoa(i%25) + `":` + strconv.Itoa(i))
	}
	in.WriteString(`,"7":1,"3":2,"7":3}`)
	want.WriteString(`"3":2,"7":3`)
	for i := 0; i < 25; i++ {
		last := i
		if i+25 < 40 {
			last = i + 25
		}
		want.WriteString(`,"k` + strconv.Itoa(i) + `":` + strconv.Itoa(last))
	}
	want.WriteString("}")
	got, err := Canonical([]byte(in.String()))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want.String() {
		t.Fatalf("got  %s\nwant %s", got, want.String())
	}
}

func TestInvalid(t *testing.T) {
	for _, in := range []string{
		``, ` `, `{`, `}`, `[`, `[1,]`, `[,1]`, `{"a":1,}`, `{"a"}`, `{"a":}`, `{a:1}`, `{'a':1}`,
		`01`, `-`, `-01`, `1.`, `.5`, `+1`, `1e`, `1e+`, `0x10`, `NaN`, `Infinity`, `-Infinity`,
		`tru`, `nul`, `True`, `"abc`, `"\x"`, `"\u12"`, `"\u12G4"`, `"\`, "\"a\tb\"", "\"a\nb\"", "\"\x00\"",
		`1 2`, `{} {}`, `[1] x`, "\uFEFF{}", "\x00", "\v1", "\f1", "1\u00a0", `"\'"`, `{"a":1 "b":2}`,
		`[1 2]`, `{"a" 1}`, `{,}`, `[1,,2]`, "\xff", "[\"a\"\xff]",
	} {
		if out, err := Canonical([]byte(in)); err == nil {
			t.Errorf("Canonical(%q) = %q, want error", in, out)
		} else if se := (*SyntaxError)(nil); !errors.As(err, &se) {
			t.Errorf("Canonical(%q) error %T, want *SyntaxError", in, err)
		}
	}
}

func TestDepthLimit(t *testing.T) {
	for _, open := range []string{"[", `{"a":`} {
		closeTok := "]"
		if open != "[" {
			closeTok = "}"
		}
		ok := strings.Repeat(open, maxDepth) + "1" + strings.Repeat(closeTok, maxDepth)
		if _, err := Canonical([]byte(ok)); err != nil {
			t.Errorf("depth %d rejected: %v", maxDepth, err)
		}
		deep := strings.Repeat(open, maxDepth+1) + "1" + strings.Repeat(closeTok, maxDepth+1)
		if _, err := Canonical([]byte(deep)); err == nil {
			t.Errorf("depth %d accepted", maxDepth+1)
		}
	}
}

func TestNumberFormatting(t *testing.T) {
	// Spot checks of the exponent boundaries of Number::toString, going
	// through appendJSNumber directly so that every branch is pinned.
	for _, tc := range []struct {
		f    float64
		want string
	}{
		{1, "1"}, {-1, "-1"}, {123, "123"}, {1e20, "100000000000000000000"},
		{1e21, "1e+21"}, {1.5e21, "1.5e+21"}, {123.456, "123.456"},
		{0.5, "0.5"}, {1e-6, "0.000001"}, {1.5e-6, "0.0000015"}, {1e-7, "1e-7"},
		{-1.5e-7, "-1.5e-7"}, {math.MaxFloat64, "1.7976931348623157e+308"},
		{math.SmallestNonzeroFloat64, "5e-324"}, {math.Copysign(0, -1), "0"},
		{math.Inf(1), "null"}, {math.Inf(-1), "null"}, {math.NaN(), "null"},
		{1 << 53, "9007199254740992"}, {123e18, "123000000000000000000"},
	} {
		if got := string(appendJSNumber(nil, tc.f)); got != tc.want {
			t.Errorf("appendJSNumber(%v) = %q, want %q", tc.f, got, tc.want)
		}
	}
}

type payload struct {
	HTML  string          `json:"html"`
	Sep   string          `json:"sep"`
	Raw   json.RawMessage `json:"raw"`
	Float float64         `json:"float"`
	Big   uint64          `json:"big"`
	Map   map[string]int  `json:"map"`
}

func TestMarshal(t *testing.T) {
	v := payload{
		HTML:  "<a href=\"x\">&</a>",
		Sep:   "a\u2028b",
		Raw:   json.RawMessage(`{"z":"\u0041\/", "1":1.0, "z":1E+2}`),
		Float: 1e21,
		Big:   12345678901234567890,
		Map:   map[string]int{"b": 1, "a": 2, "10": 3, "9": 4},
	}
	got, err := Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"html":"<a href=\"x\">&</a>","sep":"a` + "\u2028" + `b","raw":{"1":1,"z":100},"float":1e+21,"big":12345678901234567000,"map":{"9":4,"10":3,"a":2,"b":1}}`
	if string(got) != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	if _, err := Marshal(math.Inf(1)); err == nil {
		t.Fatal("Marshal(+Inf) succeeded; encoding/json rejects it")
	}
	// encoding/json replaces invalid UTF-8 in Go strings itself.
	got, err = Marshal("a\xffb")
	if err != nil || string(got) != "\"a\uFFFDb\"" {
		t.Fatalf("Marshal invalid UTF-8 = %q, %v", got, err)
	}
}

func TestErrorOffset(t *testing.T) {
	_, err := Canonical([]byte(`{"a": [1, 2,, 3]}`))
	var se *SyntaxError
	if !errors.As(err, &se) {
		t.Fatalf("error %v is not a *SyntaxError", err)
	}
	if se.Offset != 12 {
		t.Fatalf("offset %d, want 12", se.Offset)
	}
	if !strings.Contains(se.Error(), "offset 12") {
		t.Fatalf("message %q lacks the offset", se.Error())
	}
}

func TestAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector drops pooled items at random")
	}
	in := []byte(benchPayload)
	dst := make([]byte, 0, 2*len(in))
	// Warm the pool.
	if _, err := AppendCanonical(dst, in); err != nil {
		t.Fatal(err)
	}
	n := testing.AllocsPerRun(100, func() {
		if _, err := AppendCanonical(dst, in); err != nil {
			t.Fatal(err)
		}
	})
	// A garbage collection can empty the pool mid-run; allow for that.
	if n >= 1 {
		t.Fatalf("AppendCanonical allocates %.1f times per call, want 0", n)
	}
}
