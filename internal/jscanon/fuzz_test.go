package jscanon

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzCanonical checks properties that need no JavaScript engine: no
// panics, acceptance exactly as the JSON grammar (which encoding/json and
// JSON.parse share), valid output, idempotence, the same value after
// decoding, and JavaScript property order in every object. Seeds live in
// testdata/fuzz/FuzzCanonical besides the table inputs added here.
func FuzzCanonical(f *testing.F) {
	for _, tc := range canonicalTests {
		f.Add([]byte(tc.in))
	}
	f.Add([]byte(benchPayload))
	f.Fuzz(func(t *testing.T, in []byte) {
		out, err := Canonical(in)
		if err != nil {
			var se *SyntaxError
			if !errors.As(err, &se) {
				t.Fatalf("error %T is not a *SyntaxError: %v", err, err)
			}
			if json.Valid(in) && se.msg != "nesting too deep" {
				t.Fatalf("Canonical rejects valid JSON %q: %v", in, err)
			}
			return
		}
		if !json.Valid(in) {
			t.Fatalf("Canonical accepts invalid JSON %q as %q", in, out)
		}
		if !json.Valid(out) || !utf8.Valid(out) {
			t.Fatalf("output %q of %q is not valid UTF-8 JSON", out, in)
		}
		again, err := Canonical(out)
		if err != nil || !bytes.Equal(again, out) {
			t.Fatalf("not idempotent: %q -> %q -> %q (%v)", in, out, again, err)
		}
		checkPropertyOrder(t, out)

		// Both sides decode to the same Go value. Go's decoder replaces
		// invalid UTF-8 per byte rather than per WHATWG subsequence, so
		// only valid UTF-8 input is comparable; numbers beyond float64
		// make it fail, and those inputs are skipped too.
		if !utf8.Valid(in) {
			return
		}
		var vin, vout any
		if json.Unmarshal(in, &vin) != nil {
			return
		}
		if err := json.Unmarshal(out, &vout); err != nil {
			t.Fatalf("output %q does not decode: %v", out, err)
		}
		if !reflect.DeepEqual(vin, vout) {
			t.Fatalf("value changed: %q -> %q\n%#v\n%#v", in, out, vin, vout)
		}
	})
}

// checkPropertyOrder verifies that every object in canonical output lists
// array-index keys first, ascending, and no key twice.
func checkPropertyOrder(t *testing.T, out []byte) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(out))
	type obj struct {
		seen      map[string]bool
		lastIdx   int64
		sawName   bool
		expectKey bool
	}
	var stack []*obj
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatalf("tokenizing %q: %v", out, err)
		}
		var top *obj
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if top != nil && top.expectKey {
			if d, ok := tok.(json.Delim); ok && d == '}' {
				stack = stack[:len(stack)-1]
				continue
			}
			key := tok.(string)
			top.expectKey = false
			// Lone surrogates decode to U+FFFD in Go, so distinct keys may
			// look alike; skip the duplicate check for those.
			if !strings.ContainsRune(key, utf8.RuneError) {
				if top.seen[key] {
					t.Fatalf("duplicate key %q in %q", key, out)
				}
				top.seen[key] = true
			}
			if idx, ok := arrayIndex([]byte(key)); ok {
				if top.sawName || int64(idx) <= top.lastIdx {
					t.Fatalf("index key %q out of order in %q", key, out)
				}
				top.lastIdx = int64(idx)
			} else {
				top.sawName = true
			}
			continue
		}
		if top != nil {
			top.expectKey = true // after a value comes a key or '}'
		}
		if d, ok := tok.(json.Delim); ok {
			switch d {
			case '{':
				stack = append(stack, &obj{seen: map[string]bool{}, lastIdx: -1, expectKey: true})
			case '[':
				stack = append(stack, nil)
			case ']':
				stack = stack[:len(stack)-1]
				if len(stack) > 0 && stack[len(stack)-1] != nil {
					stack[len(stack)-1].expectKey = true
				}
			}
		}
	}
}
