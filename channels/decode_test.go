package channels

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/riverhub/riverhub/ai"
	"github.com/riverhub/riverhub/internal/wire"
	"github.com/riverhub/riverhub/project"
)

// storedTask is a task with every stored field set, as a submission
// writes it.
func storedTask(tb testing.TB) []byte {
	tb.Helper()
	at := time.Date(2026, 12, 5, 6, 0, 0, 123456789, time.UTC)
	t := Task{ChannelID: "0c7e7b8e-6c1a-4b43-9a3f-3f1f0f6b5a11", ProjectID: "p_0123456789abcdef",
		Workflow: project.Workflow{ID: "wf_1", Name: "movie", EventName: "movie.done", Provider: "mock", Model: "m-1",
			StructuredOutputID: "so_1", Fallbacks: []ai.Target{{Provider: "openai", Model: "gpt"}}, SystemPrompt: "be \"brief\"\n",
			CallbackTimeoutSeconds: 60, Mock: &ai.Mock{Response: json.RawMessage(`{"title":"Inception","year":2010}`), DelayMS: 5,
				Error: "x", StreamChunkChars: 4, StreamIntervalMS: 2, StreamFailAfter: 9}, Stream: true, CreatedAt: at, UpdatedAt: at},
		Schema: json.RawMessage(`{"type":"object","properties":{"title":{"type":"string"}}}`), SchemaName: "movie",
		Messages:     []ai.Message{{Role: "system", Content: "s"}, {Role: "user", Content: "hé <b>&</b> \u2028"}},
		CustomerData: json.RawMessage(`{"user_id":"u1","n":[1,2.5,null]}`), WebhookID: "wh_1", WebhookIDs: []string{"wh_1", "wh_2"},
		Events: []string{"task.completed"}, DeliveryMethod: "webhook", Playground: true, Stream: true}
	raw, err := json.Marshal(t)
	if err != nil {
		tb.Fatal(err)
	}
	return raw
}

// A stored task reads back the same with wire.Decode as with encoding/json.
func TestStoredTaskDecodes(t *testing.T) {
	t.Parallel()
	raw := storedTask(t)
	var want, got Task
	if err := json.Unmarshal(raw, &want); err != nil {
		t.Fatal(err)
	}
	if err := wire.Decode(raw, &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("wire.Decode:\n%+v\nencoding/json:\n%+v", got, want)
	}
}

// BenchmarkTaskDecode: what reading a stored task costs the worker.
func BenchmarkTaskDecode(b *testing.B) {
	raw := storedTask(b)
	for _, d := range []struct {
		name   string
		decode func([]byte, any) error
	}{{"encoding-json", json.Unmarshal}, {"wire.Decode", wire.Decode}} {
		b.Run(d.name, func(b *testing.B) {
			b.ReportAllocs()
			for range b.N {
				var t Task
				if err := d.decode(raw, &t); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
