package project

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/riverhub/riverhub/ai"
	"github.com/riverhub/riverhub/internal/apperr"
	"github.com/riverhub/riverhub/internal/wire"
)

// replaceScript sets a hash field only if it exists.
var replaceScript = redis.NewScript(`
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1`)

// swapScript replaces a hash field only if it still holds the expected
// value: 1 done, 0 changed meanwhile, -1 gone.
var swapScript = redis.NewScript(`
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then return -1 end
if cur ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1`)

// StructuredOutput is a named JSON Schema the AI's output must satisfy.
type StructuredOutput struct {
	ID        string          `json:"id"`
	Name      string          `json:"name"`
	Schema    json.RawMessage `json:"schema"`
	CreatedAt time.Time       `json:"created_at"`
}

const maxSchemaBytes = 256 << 10

func (s *Store) outputsKey(pid string) string { return s.projKey(pid, "outputs") }

// CreateOutput validates and stores a schema.
func (s *Store) CreateOutput(ctx context.Context, pid, name string, schema json.RawMessage) (StructuredOutput, error) {
	if err := checkName("name", name, 128, true); err != nil {
		return StructuredOutput{}, err
	}
	schema = bytes.TrimSpace(schema)
	if len(schema) == 0 || bytes.Equal(schema, []byte("null")) {
		return StructuredOutput{}, apperr.Invalidf("schema is required")
	}
	if len(schema) > maxSchemaBytes {
		return StructuredOutput{}, apperr.Invalidf("schema is larger than %d KiB", maxSchemaBytes>>10)
	}
	if err := ai.ValidateSchema(schema); err != nil {
		return StructuredOutput{}, apperr.New(apperr.Invalid, "invalid_schema", "schema is not a valid JSON Schema: %v", err)
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, schema); err != nil {
		return StructuredOutput{}, apperr.New(apperr.Invalid, "invalid_schema", "schema is not JSON")
	}
	o := StructuredOutput{ID: randomID("so_"), Name: name, Schema: buf.Bytes(), CreatedAt: s.now().UTC()}
	if err := s.rdb.HSet(ctx, s.outputsKey(pid), o.ID, wire.MustJSON(o)).Err(); err != nil {
		return StructuredOutput{}, fmt.Errorf("create structured output: %w", err)
	}
	return o, nil
}

// GetOutput returns one structured output.
func (s *Store) GetOutput(ctx context.Context, pid, id string) (StructuredOutput, error) {
	return cachedJSON(ctx, s, s.outputs, pid, s.outputsKey(pid), id, "structured output")
}

// ListOutputs lists structured outputs, oldest first.
func (s *Store) ListOutputs(ctx context.Context, pid string, p ListParams) (Page[StructuredOutput], error) {
	return listHash(ctx, s, s.outputsKey(pid), p, func(o *StructuredOutput) string { return createdKey(o.CreatedAt, o.ID) })
}

// DeleteOutput removes a structured output that no workflow uses.
func (s *Store) DeleteOutput(ctx context.Context, pid, id string) error {
	if _, err := s.GetOutput(ctx, pid, id); err != nil {
		return err
	}
	page, err := s.ListWorkflows(ctx, pid, ListParams{Limit: 500})
	for err == nil {
		for _, w := range page.Items {
			if w.StructuredOutputID == id {
				return apperr.New(apperr.Conflict, "output_in_use", "workflow %q uses this structured output; change it first", w.Name)
			}
		}
		if page.NextCursor == nil {
			break
		}
		page, err = s.ListWorkflows(ctx, pid, ListParams{Limit: 500, Cursor: *page.NextCursor})
	}
	if err != nil {
		return err
	}
	s.outputs.drop(fieldKey(pid, id))
	return s.rdb.HDel(ctx, s.outputsKey(pid), id).Err()
}
