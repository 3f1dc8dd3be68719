package ai

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// FuzzParseOutput checks the invariants every task result relies on,
// whatever a model answers: Data is valid UTF-8 JSON, schemaless Data is an
// object that preserves the text, and schema-checked Data still validates.
func FuzzParseOutput(f *testing.F) {
	f.Add("plain answer", false)
	f.Add("```json\n{\"name\": \"x\", \"n\": 1}\n```", true)
	f.Add(`{"name":"x","n":1.5e3}`, true)

	sch := mustSchema(f, `{"type":"object","properties":{"name":{"type":"string"},"n":{"type":"number"}},"required":["name"]}`)

	f.Fuzz(func(t *testing.T, text string, withSchema bool) {
		var s *compiledSchema
		if withSchema {
			s = sch
		}
		data, err := parseOutput([]byte(text), s)
		if err != nil {
			if !withSchema {
				t.Fatalf("schemaless parse failed: %v", err)
			}
			if !strings.HasPrefix(err.Error(), "output does not match schema: ") {
				t.Fatalf("unexpected error %q", err)
			}
			return
		}
		if !json.Valid(data) || !utf8.Valid(data) {
			t.Fatalf("Data %q is not valid UTF-8 JSON", data)
		}
		var compacted bytes.Buffer
		if err := json.Compact(&compacted, data); err != nil || !bytes.Equal(compacted.Bytes(), data) {
			t.Fatalf("Data %q is not compact", data)
		}
		if withSchema {
			inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
			if err != nil {
				t.Fatalf("Data %q does not decode: %v", data, err)
			}
			if err := sch.validator.Validate(inst); err != nil {
				t.Fatalf("Data %q no longer validates: %v", data, err)
			}
			return
		}
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(data, &obj); err != nil {
			t.Fatalf("schemaless Data %q is not an object: %v", data, err)
		}
		if bytes.HasPrefix(data, []byte(contentPrefix)) && len(obj) == 1 {
			var content string
			if err := json.Unmarshal(obj["content"], &content); err != nil {
				t.Fatal(err)
			}
			if want := strings.ToValidUTF8(text, "\uFFFD"); content != want && !looksLikeObject(text) {
				t.Fatalf("content %q, want the text %q", content, want)
			}
		}
	})
}

// looksLikeObject reports whether text may legitimately have been parsed as
// a JSON object of the form {"content": ...}, rather than wrapped.
func looksLikeObject(text string) bool {
	return json.Valid(unfence(bytes.TrimSpace([]byte(strings.ToValidUTF8(text, "\uFFFD")))))
}
