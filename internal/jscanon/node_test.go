package jscanon

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// nodeScript reads base64 documents, one a line, and answers each with
// "ok <base64 of JSON.stringify(JSON.parse(doc))>" or "err <name>". The body
// is decoded with Buffer's UTF-8 decoder, as Node does for request bodies.
const nodeScript = `
const rl = require('readline').createInterface({input: process.stdin, crlfDelay: Infinity});
let out = [];
const flush = () => { if (out.length) { process.stdout.write(out.join('')); out = []; } };
rl.on('line', (line) => {
  let r;
  try {
    const s = JSON.stringify(JSON.parse(Buffer.from(line, 'base64').toString('utf8')));
    r = 'ok ' + Buffer.from(s, 'utf8').toString('base64');
  } catch (e) {
    r = 'err ' + e.name;
  }
  out.push(r + '\n');
  if (out.length >= 256) flush();
});
rl.on('close', flush);
`

// nodeResult is node's answer for one document.
type nodeResult struct {
	ok  bool
	out []byte
	err string
}

// runNode feeds docs to one long-lived node process; starting one per
// document would cost tens of milliseconds each.
func runNode(t *testing.T, docs [][]byte) []nodeResult {
	t.Helper()
	nodePath, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node not on PATH; differential test skipped")
	}
	cmd := exec.Command(nodePath, "-e", nodeScript)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Write from a goroutine: node answers while it reads, and a full
	// stdout pipe would otherwise block both sides.
	writeErr := make(chan error, 1)
	go func() {
		w := bufio.NewWriter(stdin)
		enc := base64.StdEncoding
		var line []byte
		for _, d := range docs {
			line = enc.AppendEncode(line[:0], d)
			line = append(line, '\n')
			if _, err := w.Write(line); err != nil {
				writeErr <- err
				return
			}
		}
		if err := w.Flush(); err != nil {
			writeErr <- err
			return
		}
		writeErr <- stdin.Close()
	}()
	results := make([]nodeResult, 0, len(docs))
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "ok "):
			out, err := base64.StdEncoding.DecodeString(line[3:])
			if err != nil {
				t.Fatalf("bad base64 from node: %v", err)
			}
			results = append(results, nodeResult{ok: true, out: out})
		case strings.HasPrefix(line, "err "):
			results = append(results, nodeResult{err: line[4:]})
		default:
			t.Fatalf("unexpected line from node: %q", line)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if err := <-writeErr; err != nil {
		t.Fatalf("writing to node: %v", err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("node: %v\n%s", err, stderr.Bytes())
	}
	if len(results) != len(docs) {
		t.Fatalf("node answered %d of %d documents", len(results), len(docs))
	}
	return results
}

func TestDifferentialNode(t *testing.T) {
	if _, err := exec.LookPath("node"); err != nil {
		t.Skip("node not on PATH; differential test skipped")
	}
	seed := uint64(20250314)
	if s := os.Getenv("JSCANON_DIFF_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("JSCANON_DIFF_SEED: %v", err)
		}
		seed = v
	}
	n := 3000
	if testing.Short() {
		n = 500
	}
	if s := os.Getenv("JSCANON_DIFF_N"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("JSCANON_DIFF_N: %v", err)
		}
		n = v
	}
	docs := generateDocs(rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), n)

	start := time.Now()
	results := runNode(t, docs)
	t.Logf("seed %d: node answered %d documents in %v", seed, len(docs), time.Since(start))

	valid, failures := 0, 0
	for i, d := range docs {
		want := results[i]
		got, err := Canonical(d)
		if want.ok {
			valid++
		}
		var msg string
		switch {
		case want.ok && err != nil:
			msg = fmt.Sprintf("node accepts, Canonical fails: %v\nnode: %q", err, want.out)
		case !want.ok && err == nil:
			msg = fmt.Sprintf("node throws %s, Canonical returns %q", want.err, got)
		case want.ok && !bytes.Equal(got, want.out):
			msg = fmt.Sprintf("output differs\n got %q\nwant %q", got, want.out)
		default:
			continue
		}
		failures++
		if failures <= 20 {
			t.Errorf("doc %d %q:\n%s", i, d, msg)
		}
	}
	if failures > 20 {
		t.Errorf("... %d failures in all", failures)
	}
	t.Logf("%d documents, %d valid JSON, %d rejected by both", len(docs), valid, len(docs)-valid)
	// Guard against a generator that drifted into producing mostly
	// garbage, which would make the comparison vacuous.
	if valid < len(docs)/2 {
		t.Errorf("only %d of %d documents are valid JSON", valid, len(docs))
	}
}

// generateDocs returns n random valid documents, plus mutated copies that
// are often invalid (so that acceptance is compared too), plus arrays of
// random numbers in many spellings.
func generateDocs(r *rand.Rand, n int) [][]byte {
	g := &docGen{r: r}
	var docs [][]byte
	for range n {
		g.b = nil
		g.ws()
		g.value(0)
		g.ws()
		docs = append(docs, g.b)
	}
	for i := range n / 3 {
		docs = append(docs, mutate(r, docs[i]))
	}
	for range n / 6 {
		g.b = []byte{'['}
		for j := range 12 {
			if j > 0 {
				g.b = append(g.b, ',')
			}
			g.number()
		}
		g.b = append(g.b, ']')
		docs = append(docs, g.b)
	}
	return docs
}

type docGen struct {
	r *rand.Rand
	b []byte
}

func (g *docGen) ws() {
	if g.r.IntN(5) == 0 {
		for range 1 + g.r.IntN(3) {
			g.b = append(g.b, " \t\n\r"[g.r.IntN(4)])
		}
	}
}

func (g *docGen) value(depth int) {
	k := g.r.IntN(10)
	if depth >= 5 && k < 4 {
		k += 4
	}
	switch {
	case k < 2:
		g.object(depth + 1)
	case k < 4:
		g.array(depth + 1)
	case k < 6:
		g.str(g.text())
	case k < 9:
		g.number()
	default:
		g.b = append(g.b, []string{"true", "false", "null"}[g.r.IntN(3)]...)
	}
}

func (g *docGen) array(depth int) {
	g.b = append(g.b, '[')
	g.ws()
	for i := range g.r.IntN(6) {
		if i > 0 {
			g.b = append(g.b, ',')
			g.ws()
		}
		g.value(depth)
		g.ws()
	}
	g.b = append(g.b, ']')
}

// trickyKeys are keys whose order or identity JavaScript treats specially.
var trickyKeys = []string{
	"0", "1", "2", "7", "10", "42", "100", "01", "00", "-1", "-0", "+1", "1.5", "1e3", " 1", "1 ",
	"4294967294", "4294967295", "4294967296", "9007199254740993", "99999999999", "",
	"a", "b", "c", "id", "__proto__", "constructor", "toString", "length", "é", "😀",
	"\u2028", "A", "<>", "/", "\"", "\\", "\x00", "\n", "\ufeff",
}

func (g *docGen) key() []unit {
	if g.r.IntN(3) > 0 {
		return textUnits(trickyKeys[g.r.IntN(len(trickyKeys))])
	}
	return g.text()
}

func (g *docGen) object(depth int) {
	g.b = append(g.b, '{')
	g.ws()
	n := g.r.IntN(7)
	if g.r.IntN(15) == 0 {
		n = 17 + g.r.IntN(30) // large enough for the sorting de-duplication path
	}
	for i := range n {
		if i > 0 {
			g.b = append(g.b, ',')
			g.ws()
		}
		g.str(g.key())
		g.ws()
		g.b = append(g.b, ':')
		g.ws()
		g.value(depth)
		g.ws()
	}
	g.b = append(g.b, '}')
}

// unit is one piece of string content: a code point (possibly a lone
// surrogate, which can only be written escaped) or raw bytes that are not
// valid UTF-8 (which can only be written raw).
type unit struct {
	r   rune
	raw string
}

func textUnits(s string) []unit {
	var u []unit
	for _, r := range s {
		u = append(u, unit{r: r})
	}
	return u
}

var invalidUTF8 = []string{
	"\x80", "\xbf", "\xff", "\xfe", "\xc0\xaf", "\xc1\x81", "\xc2", "\xed\xa0\x80", "\xed\xbf\xbf",
	"\xf0\x9f\x98", "\xf0\x9f", "\xe2\x82", "\xe0\x80\x80", "\xe0\x9f\xbf", "\xf4\x90\x80\x80",
	"\xf5\x80\x80\x80", "\xf8\x88\x80\x80\x80", "\xf0\x80\x80\x80", "\xc3\x28",
}

func (g *docGen) text() []unit {
	n := g.r.IntN(12)
	if g.r.IntN(10) == 0 {
		n += 40
	}
	u := make([]unit, 0, n)
	for range n {
		var r rune
		switch k := g.r.IntN(20); {
		case k < 7:
			const ascii = " aAzZ09-_.,:;!?'`~@#$%^*()=+"
			r = rune(ascii[g.r.IntN(len(ascii))])
		case k == 7:
			r = rune(`"\/<>&`[g.r.IntN(6)])
		case k == 8:
			r = rune(g.r.IntN(0x20))
		case k == 9:
			r = []rune{0x7f, 0x80, 0x9f, 0xa0, 0xad, 0xff}[g.r.IntN(6)]
		case k == 10:
			r = []rune{0x2028, 0x2029, 0xfeff, 0xfffd, 0xfffe, 0xffff, 0x200b, 0x0300}[g.r.IntN(8)]
		case k == 11:
			r = rune(0x100 + g.r.IntN(0xd800-0x100))
		case k == 12:
			r = rune(0xe000 + g.r.IntN(0x10000-0xe000))
		case k == 13:
			r = rune(0x10000 + g.r.IntN(0x110000-0x10000))
		case k == 14:
			r = []rune{0x1f600, 0x1f4a9, 0x10000, 0x10ffff}[g.r.IntN(4)]
		case k == 15:
			r = rune(0xd800 + g.r.IntN(0x800)) // lone surrogate, escaped
		case k == 16:
			u = append(u, unit{raw: invalidUTF8[g.r.IntN(len(invalidUTF8))]})
			continue
		case k == 17:
			// An escaped high surrogate right before another unit, which
			// must pair only with an escaped low surrogate.
			r = rune(0xd800 + g.r.IntN(0x400))
		default:
			r = rune('a' + g.r.IntN(26))
		}
		u = append(u, unit{r: r})
	}
	return u
}

// str writes units as a JSON string literal, choosing at random among the
// spellings JSON allows for each.
func (g *docGen) str(units []unit) {
	g.b = append(g.b, '"')
	for _, u := range units {
		if u.raw != "" {
			g.b = append(g.b, u.raw...)
			continue
		}
		r := u.r
		switch {
		case r >= 0xd800 && r < 0xe000:
			g.hexEscape(r)
		case r < 0x20 || r == '"' || r == '\\':
			short := map[rune]byte{'\b': 'b', '\f': 'f', '\n': 'n', '\r': 'r', '\t': 't', '"': '"', '\\': '\\'}
			if c, ok := short[r]; ok && g.r.IntN(2) == 0 {
				g.b = append(g.b, '\\', c)
			} else {
				g.hexEscape(r)
			}
		case r == '/' && g.r.IntN(2) == 0:
			g.b = append(g.b, '\\', '/')
		case g.r.IntN(4) == 0:
			if r >= 0x10000 {
				r -= 0x10000
				g.hexEscape(0xd800 + r>>10)
				g.hexEscape(0xdc00 + r&0x3ff)
			} else {
				g.hexEscape(r)
			}
		default:
			g.b = utf8.AppendRune(g.b, r)
		}
	}
	g.b = append(g.b, '"')
}

func (g *docGen) hexEscape(r rune) {
	const lower, upper = "0123456789abcdef", "0123456789ABCDEF"
	g.b = append(g.b, '\\', 'u')
	for shift := 12; shift >= 0; shift -= 4 {
		digits := lower
		if g.r.IntN(2) == 0 {
			digits = upper
		}
		g.b = append(g.b, digits[r>>shift&0xf])
	}
}

// boundaryNumbers sit on the edges of Number::toString's notation switches,
// of double rounding, of the exactly representable integers, and of
// overflow and underflow.
var boundaryNumbers = []string{
	"0", "-0", "0.0", "-0.0", "0e0", "-0E-0", "0e+999", "1e21", "-1e21", "1e+21", "9.99999999999999e20",
	"999999999999999999999", "999999999999999900000", "100000000000000000000", "1e20", "1e-7", "1e-6",
	"0.000001", "0.0000001", "0.00000099999999999999995", "1.5e-7", "123e-9", "5e-324", "-5e-324",
	"2.4703282292062327e-324", "2.4703282292062328e-324", "1e-400", "-1e-400", "1e400", "-1e400",
	"1.7976931348623157e308", "1.7976931348623158e308", "1.7976931348623159e308", "1.797693134862316e308",
	"9007199254740991", "9007199254740992", "9007199254740993", "-9007199254740993", "18014398509481985",
	"12345678901234567890", "123456789012345678901234567890", "0.1", "0.2", "0.30000000000000004",
	"1.0", "1.00", "10.0", "1E2", "1e+2", "1e-2", "1E-02", "1e0005", "100e-2", "0.5e1", "2.5E-1",
	"4.35", "0.07", "1.005", "1234.5678", "9.999999999999999", "99.99999999999999", "0.1e1",
	"2.2250738585072011e-308", "2.2250738585072014e-308", "4.9406564584124654e-324", "1e23", "8.41e21",
	"5e-7", "-1.5e-7", "0.000001234", "1.2345678901234567e-7",
}

func (g *docGen) number() {
	r := g.r
	neg := func() {
		if r.IntN(3) == 0 {
			g.b = append(g.b, '-')
		}
	}
	digits := func(n int, lead bool) {
		for i := range n {
			if i == 0 && lead {
				g.b = append(g.b, byte('1'+r.IntN(9)))
			} else {
				g.b = append(g.b, byte('0'+r.IntN(10)))
			}
		}
	}
	switch r.IntN(8) {
	case 0:
		g.b = append(g.b, boundaryNumbers[r.IntN(len(boundaryNumbers))]...)
	case 1:
		neg()
		g.b = strconv.AppendInt(g.b, int64(r.IntN(100000)), 10)
	case 2: // long integers, past 2^53 and past 1e21
		neg()
		digits(1+r.IntN(30), true)
	case 3, 4: // decimals, possibly with exponent
		neg()
		if r.IntN(3) == 0 {
			g.b = append(g.b, '0')
		} else {
			digits(1+r.IntN(8), true)
		}
		if r.IntN(4) > 0 {
			g.b = append(g.b, '.')
			if r.IntN(3) == 0 {
				for range r.IntN(8) {
					g.b = append(g.b, '0')
				}
			}
			digits(1+r.IntN(20), false)
		}
		if r.IntN(2) == 0 {
			g.b = append(g.b, "eE"[r.IntN(2)])
			if s := r.IntN(3); s < 2 {
				g.b = append(g.b, "+-"[s])
			}
			if r.IntN(5) == 0 {
				g.b = append(g.b, '0')
			}
			g.b = strconv.AppendInt(g.b, int64(r.IntN([]int{10, 30, 330, 400}[r.IntN(4)])), 10)
		}
	default: // random doubles across the whole range, in Go's spellings
		var f float64
		for {
			f = math.Float64frombits(r.Uint64())
			if !math.IsNaN(f) && !math.IsInf(f, 0) {
				break
			}
		}
		if r.IntN(3) == 0 {
			f = float64(float32(f)) // shorter digit strings
			if math.IsInf(f, 0) {
				f = 1.5
			}
		}
		prec := -1
		if r.IntN(3) == 0 {
			prec = r.IntN(25)
		}
		format := "eEg"[r.IntN(3)]
		if math.Abs(f) < 1e30 && math.Abs(f) > 1e-30 && r.IntN(3) == 0 {
			format = 'f'
		}
		s := strconv.FormatFloat(f, format, prec, 64)
		// Go writes 1e+06 and the like, which is valid JSON too.
		g.b = append(g.b, s...)
	}
}

// mutate applies a few random byte edits, which may or may not keep the
// document valid.
func mutate(r *rand.Rand, doc []byte) []byte {
	d := bytes.Clone(doc)
	inserts := []string{"{", "}", "[", "]", ",", ":", "\"", "\\", " ", "0", "-", ".", "e", "+", "x", "\x00", "\x1f", "\t", "\xff", "\xef\xbb\xbf", "u", "\\u", "1", "n"}
	for range 1 + r.IntN(2) {
		p := 0
		if len(d) > 0 {
			p = r.IntN(len(d) + 1)
		}
		switch r.IntN(4) {
		case 0:
			if p < len(d) {
				d = append(d[:p], d[p+1:]...)
			}
		case 1:
			d = append(d[:p], append([]byte(inserts[r.IntN(len(inserts))]), d[p:]...)...)
		case 2:
			if p < len(d) {
				d[p] = inserts[r.IntN(len(inserts))][0]
			}
		default:
			d = d[:p]
		}
	}
	return d
}

// TestNodeHarness checks the harness itself on answers known in advance, so
// that a broken script or protocol cannot make the differential test pass
// vacuously.
func TestNodeHarness(t *testing.T) {
	docs := [][]byte{[]byte(`{"b":1,"0":1.0}`), []byte(`[1,`)}
	res := runNode(t, docs)
	if !res[0].ok || string(res[0].out) != `{"0":1,"b":1}` {
		t.Fatalf("node answered %+v for %s", res[0], docs[0])
	}
	if res[1].ok {
		t.Fatalf("node accepted %s", docs[1])
	}
}
