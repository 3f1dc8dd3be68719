package ai

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// ErrInvalidSchema is wrapped by the errors of ValidateSchema, and by Run
// when the request's schema does not compile.
var ErrInvalidSchema = errors.New("invalid schema")

// ValidateSchema reports whether schema is a valid JSON Schema document
// (draft 2020-12 unless it declares another draft through $schema). The
// error is meant to be shown to the user who wrote the schema. A nil, empty
// or null schema means "no schema" and is accepted.
func ValidateSchema(schema json.RawMessage) error {
	_, err := schemaFor(schema)
	return err
}

// compiledSchema is a request schema prepared for every use Run has for it.
type compiledSchema struct {
	raw       json.RawMessage    // compact form, sent to OpenAI-compatible servers
	validator *jsonschema.Schema // checks the model's output
	// toolSchema is the Anthropic tool input_schema. Tool inputs must be
	// objects, so a schema for anything else is wrapped in {"value": ...}
	// and wrapped records that the tool input must be unwrapped.
	toolSchema json.RawMessage
	wrapped    bool
}

// cacheEntry memoizes a compilation, including its failure: a task that
// keeps sending the same broken schema should not recompile it every time.
type cacheEntry struct {
	sch *compiledSchema
	err error
}

// maxCachedSchemas bounds the cache. Schemas come from workflow definitions,
// so a real deployment uses far fewer; the bound only protects memory if
// something generates schemas per task.
const maxCachedSchemas = 1024

var (
	schemaCache     sync.Map // [sha256.Size]byte -> cacheEntry
	schemaCacheSize atomic.Int64
)

// schemaFor returns the compiled form of raw, or nil when raw means "no
// schema". Compilation happens once per distinct schema document.
func schemaFor(raw json.RawMessage) (*compiledSchema, error) {
	if isNoSchema(raw) {
		return nil, nil
	}
	key := sha256.Sum256(raw)
	if v, ok := schemaCache.Load(key); ok {
		e := v.(cacheEntry)
		return e.sch, e.err
	}
	sch, err := compileSchema(raw)
	if err != nil {
		err = fmt.Errorf("%w: %s", ErrInvalidSchema, err)
	}
	if _, loaded := schemaCache.LoadOrStore(key, cacheEntry{sch: sch, err: err}); !loaded {
		if schemaCacheSize.Add(1) > maxCachedSchemas {
			evictOne(key)
		}
	}
	return sch, err
}

// evictOne drops an arbitrary entry other than keep. Eviction is rare (see
// maxCachedSchemas), so the linear Range does not matter.
func evictOne(keep [sha256.Size]byte) {
	schemaCache.Range(func(k, _ any) bool {
		if k.([sha256.Size]byte) == keep {
			return true
		}
		if _, deleted := schemaCache.LoadAndDelete(k); deleted {
			schemaCacheSize.Add(-1)
		}
		return false
	})
}

func isNoSchema(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	return len(t) == 0 || string(t) == "null"
}

// schemaURL names the schema inside the compiler. It is absolute and not a
// file URL so that relative $refs never resolve to the local filesystem.
const schemaURL = "riverhub:///schema.json"

// noLoader refuses every external document: schemas are user input, and
// following their $refs would let them read files or reach the network.
type noLoader struct{}

func (noLoader) Load(string) (any, error) {
	return nil, errors.New("external references are not allowed")
}

func compileSchema(raw json.RawMessage) (*compiledSchema, error) {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("not valid JSON: %v", err)
	}
	c := jsonschema.NewCompiler()
	// Pin the draft so a library upgrade cannot silently change how stored
	// schemas are interpreted.
	c.DefaultDraft(jsonschema.Draft2020)
	c.UseLoader(noLoader{})
	if err := c.AddResource(schemaURL, doc); err != nil {
		return nil, err
	}
	validator, err := c.Compile(schemaURL)
	if err != nil {
		return nil, errors.New(describeCompileError(err))
	}

	var compact bytes.Buffer
	compact.Grow(len(raw))
	if err := json.Compact(&compact, raw); err != nil {
		return nil, fmt.Errorf("not valid JSON: %v", err)
	}
	sch := &compiledSchema{raw: compact.Bytes(), validator: validator}
	sch.toolSchema, sch.wrapped, err = toolInputSchema(doc, sch.raw)
	if err != nil {
		return nil, err
	}
	return sch, nil
}

// toolInputSchema derives the Anthropic input_schema from the schema.
func toolInputSchema(doc any, raw json.RawMessage) (json.RawMessage, bool, error) {
	obj, _ := doc.(map[string]any)
	if t, _ := obj["type"].(string); t == "object" {
		return raw, false, nil
	}
	wrapper := map[string]any{
		"type":       "object",
		"properties": map[string]any{"value": json.RawMessage(raw)},
		"required":   []string{"value"},
	}
	// Local $refs ("#/$defs/x") resolve against the document root, which
	// the wrapper replaces; hoisting the definitions keeps them resolvable.
	for _, k := range [...]string{"$defs", "definitions"} {
		if v, ok := obj[k]; ok {
			wrapper[k] = v
		}
	}
	b, err := json.Marshal(wrapper)
	if err != nil {
		return nil, false, fmt.Errorf("wrapping schema: %v", err)
	}
	return b, true, nil
}

// describeCompileError turns the compiler's multi-line report into one line
// that points at the offending keywords.
func describeCompileError(err error) string {
	var sve *jsonschema.SchemaValidationError
	if errors.As(err, &sve) {
		var ve *jsonschema.ValidationError
		if errors.As(sve.Err, &ve) {
			return describeValidation(ve)
		}
		return oneLine(sve.Err.Error())
	}
	return oneLine(err.Error())
}

// describeValidation lists the leaf failures of a validation error, which
// are the actionable ones ("at '/age': got string, want integer"); the
// inner nodes only say that a combinator failed.
func describeValidation(ve *jsonschema.ValidationError) string {
	var parts []string
	var walk func(*jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if len(parts) >= 8 {
			return
		}
		if len(e.Causes) == 0 {
			parts = append(parts, oneLine(e.Error()))
			return
		}
		for _, c := range e.Causes {
			walk(c)
		}
	}
	walk(ve)
	if len(parts) == 0 {
		return oneLine(ve.Error())
	}
	return strings.Join(parts, "; ")
}
