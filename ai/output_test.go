package ai

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

func mustSchema(tb testing.TB, raw string) *compiledSchema {
	tb.Helper()
	sch, err := schemaFor(json.RawMessage(raw))
	if err != nil || sch == nil {
		tb.Fatalf("schemaFor(%s) = %v, %v", raw, sch, err)
	}
	return sch
}

func TestParseOutputWithoutSchema(t *testing.T) {
	tests := []struct {
		name string
		text string
		want string
	}{
		{"plain text", "Hello", `{"content":"Hello"}`},
		{"object", `{"a":1}`, `{"a":1}`},
		{"object with whitespace", " \n{ \"a\" : [ 1 , 2 ] }\n", `{"a":[1,2]}`},
		{"big number kept exactly", `{"n":12345678901234567890}`, `{"n":12345678901234567890}`},
		{"fenced json", "```json\n{\"a\": 1}\n```", `{"a":1}`},
		{"fenced without language", "```\n{\"a\": 1}\n```\n", `{"a":1}`},
		{"fenced uppercase language", "```JSON\n{\"a\": 1}\n```", `{"a":1}`},
		{"fenced non-object kept as text", "```json\n[1]\n```", `{"content":"` + "```json\\n[1]\\n```" + `"}`},
		{"array is text", `[1,2]`, `{"content":"[1,2]"}`},
		{"broken object is text", `{"a":`, `{"content":"{\"a\":"}`},
		{"html not escaped", `<b>&</b>`, `{"content":"<b>&</b>"}`},
		{"control characters", "a\tb\x01", `{"content":"a\tb\u0001"}`},
		{"invalid utf-8", "a\xffb", `{"content":"a` + "\uFFFD" + `b"}`},
		{"line separator escaped", "a\u2028b", `{"content":"a\u2028b"}`},
		{"empty", "", `{"content":""}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseOutput([]byte(tt.text), nil)
			if err != nil {
				t.Fatalf("parseOutput: %v", err)
			}
			if string(got) != tt.want {
				t.Errorf("parseOutput(%q) = %s, want %s", tt.text, got, tt.want)
			}
			if !json.Valid(got) || !utf8.Valid(got) {
				t.Errorf("output %q is not valid UTF-8 JSON", got)
			}
		})
	}
}

func TestParseOutputWithSchema(t *testing.T) {
	obj := mustSchema(t, `{"type":"object","properties":{"tags":{"type":"array","items":{"type":"string"}}},"required":["tags"]}`)
	arr := mustSchema(t, `{"type":"array","maxItems":2}`)
	tests := []struct {
		name    string
		sch     *compiledSchema
		text    string
		want    string
		wantErr string // prefix
	}{
		{name: "valid", sch: obj, text: `{ "tags": ["a"] }`, want: `{"tags":["a"]}`},
		{name: "fenced valid", sch: obj, text: "```json\n{\"tags\":[]}\n```", want: `{"tags":[]}`},
		{name: "array schema", sch: arr, text: `[1, 2]`, want: `[1,2]`},
		{name: "missing property", sch: obj, text: `{}`, wantErr: "output does not match schema: at '': missing property 'tags'"},
		{name: "wrong item type", sch: obj, text: `{"tags":[1]}`, wantErr: "output does not match schema: at '/tags/0': got number, want string"},
		{name: "too many items", sch: arr, text: `[1,2,3]`, wantErr: "output does not match schema: at '': maxItems: got 3, want 2"},
		{name: "prose", sch: obj, text: `Sure! Here it is.`, wantErr: "output does not match schema: not valid JSON: "},
		{name: "trailing garbage", sch: obj, text: `{"tags":[]} extra`, wantErr: "output does not match schema: not valid JSON: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseOutput([]byte(tt.text), tt.sch)
			if tt.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want prefix %q", err, tt.wantErr)
				}
				if !errors.Is(err, errOutputMismatch) {
					t.Errorf("err does not wrap errOutputMismatch")
				}
				return
			}
			if err != nil {
				t.Fatalf("parseOutput: %v", err)
			}
			if string(got) != tt.want {
				t.Errorf("Data = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestSchemaErrorIsBounded(t *testing.T) {
	sch := mustSchema(t, `{"type":"object","additionalProperties":{"type":"integer"}}`)
	text := `{` + strings.Repeat(`"`+strings.Repeat("k", 40)+`x":"v",`, 50) + `"z":"v"}`
	_, err := parseOutput([]byte(text), sch)
	if err == nil {
		t.Fatal("want a schema error")
	}
	if msg := err.Error(); len(msg) > len("output does not match schema: ")+maxSchemaErrorLen || strings.Contains(msg, "\n") {
		t.Errorf("error is %d bytes or multi-line: %q", len(msg), msg)
	}
}

func TestContentObjectRoundTrip(t *testing.T) {
	for _, s := range []string{"", "plain", `q"uote\`, "\x00\x1f\x7f", "日本語 ✓", "\u2028\u2029", "<script>&amp;"} {
		var got struct{ Content string }
		if err := json.Unmarshal(contentObject([]byte(s)), &got); err != nil {
			t.Fatalf("contentObject(%q) is invalid JSON: %v", s, err)
		}
		if got.Content != s {
			t.Errorf("round trip of %q gave %q", s, got.Content)
		}
	}
}

func TestUnfence(t *testing.T) {
	tests := []struct{ in, want string }{
		{"```json\n{}\n```", "{}"},
		{"```\n{}\n```", "{}"},
		{"```json  \n  {}  \n```", "{}"},
		{"```{}```", "```{}```"},
		{"```json {} ```", "```json {} ```"},
		{"``````", "``````"},
		{"{}", "{}"},
		{"```json\n{}", "```json\n{}"},
	}
	for _, tt := range tests {
		if got := string(unfence([]byte(tt.in))); got != tt.want {
			t.Errorf("unfence(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestSanitizeName(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", "output"},
		{"person", "person"},
		{"my-schema_2", "my-schema_2"},
		{"person record!", "person_record_"},
		{"café", "caf_"},
		{strings.Repeat("a", 70), strings.Repeat("a", 64)},
	}
	for _, tt := range tests {
		if got := sanitizeName(tt.in); got != tt.want {
			t.Errorf("sanitizeName(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestTruncate(t *testing.T) {
	tests := []struct {
		in   string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"abcdefghij", 8, "abcde..."},
		{"ééééé", 8, "éé..."}, // never splits a rune
	}
	for _, tt := range tests {
		got := truncate(tt.in, tt.n)
		if got != tt.want || !utf8.ValidString(got) || len(got) > tt.n {
			t.Errorf("truncate(%q, %d) = %q, want %q", tt.in, tt.n, got, tt.want)
		}
	}
}

func TestProviderMessage(t *testing.T) {
	tests := []struct{ body, want string }{
		{`{"error":{"message":"bad key","type":"auth"}}`, "bad key"},
		{`{"type":"error","error":{"type":"x","message":"over"}}`, "over"},
		{`{"error":"plain"}`, "plain"},
		{`{"object":"error","message":"vllm says no"}`, "vllm says no"},
		{`{"detail":"Not Found"}`, `{"detail":"Not Found"}`},
		{`<html>502</html>`, ""},
		{``, ""},
		{"line one\r\nline two", "line one line two"},
	}
	for _, tt := range tests {
		if got := providerMessage([]byte(tt.body)); got != tt.want {
			t.Errorf("providerMessage(%q) = %q, want %q", tt.body, got, tt.want)
		}
	}
}
