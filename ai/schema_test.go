package ai

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestValidateSchema(t *testing.T) {
	tests := []struct {
		name    string
		schema  string
		wantErr string // substring; empty means valid
	}{
		{name: "object schema", schema: `{"type":"object","properties":{"a":{"type":"string"}},"required":["a"]}`},
		{name: "boolean schema", schema: `true`},
		{name: "local ref", schema: `{"$defs":{"x":{"type":"integer"}},"$ref":"#/$defs/x"}`},
		{name: "draft-07", schema: `{"$schema":"http://json-schema.org/draft-07/schema#","type":"string"}`},
		{name: "none", schema: ``},
		{name: "null", schema: `null`},
		{name: "type not a string", schema: `{"type": 12}`, wantErr: "at '/type'"},
		{name: "unknown type name", schema: `{"type":"strnig"}`, wantErr: "at '/type'"},
		{name: "bad regex", schema: `{"pattern":"("}`, wantErr: "not valid regex"},
		{name: "not json", schema: `{"type":`, wantErr: "not valid JSON"},
		{name: "number", schema: `12`, wantErr: "want boolean or object"},
		{name: "file ref", schema: `{"$ref":"file:///etc/passwd"}`, wantErr: "external references are not allowed"},
		{name: "relative ref", schema: `{"$ref":"other.json"}`, wantErr: "external references are not allowed"},
		{name: "remote metaschema", schema: `{"$schema":"https://example.com/meta.json"}`, wantErr: "external references are not allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateSchema(json.RawMessage(tt.schema))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("ValidateSchema: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("ValidateSchema(%s) = nil, want error containing %q", tt.schema, tt.wantErr)
			}
			if !errors.Is(err, ErrInvalidSchema) {
				t.Errorf("err = %v, want it to wrap ErrInvalidSchema", err)
			}
			if msg := err.Error(); !strings.Contains(msg, tt.wantErr) || strings.Contains(msg, "\n") {
				t.Errorf("err = %q, want one line containing %q", msg, tt.wantErr)
			}
		})
	}
}

func TestSchemaCompiledOnce(t *testing.T) {
	raw := `{"type":"object","title":"compiled-once"}`
	a, err := schemaFor(json.RawMessage(raw))
	if err != nil {
		t.Fatal(err)
	}
	b, err := schemaFor(json.RawMessage(raw))
	if err != nil {
		t.Fatal(err)
	}
	if a != b {
		t.Error("the same schema was compiled twice")
	}
	if string(a.raw) != raw || a.wrapped {
		t.Errorf("compiled = raw %s wrapped %v", a.raw, a.wrapped)
	}
}

func TestSchemaCacheIsBounded(t *testing.T) {
	for i := range maxCachedSchemas + 20 {
		if _, err := schemaFor(json.RawMessage(fmt.Sprintf(`{"maxLength":%d}`, i))); err != nil {
			t.Fatal(err)
		}
	}
	if n := schemaCacheSize.Load(); n > maxCachedSchemas {
		t.Errorf("cache holds %d schemas, want <= %d", n, maxCachedSchemas)
	}
	var counted int64
	schemaCache.Range(func(_, _ any) bool { counted++; return true })
	if counted != schemaCacheSize.Load() {
		t.Errorf("size counter %d disagrees with %d entries", schemaCacheSize.Load(), counted)
	}
}
