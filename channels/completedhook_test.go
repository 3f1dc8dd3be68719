package channels

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/riverhub/riverhub/dispatch"
	"github.com/riverhub/riverhub/internal/rdb"
	"github.com/riverhub/riverhub/internal/rdb/rdbtest"
	"github.com/riverhub/riverhub/project"
)

// countingDispatcher is a real dispatch engine that counts how
// completions hand it their deliveries.
type countingDispatcher struct {
	*dispatch.Engine
	prepares, enqueues atomic.Int64
}

func (d *countingDispatcher) Prepare(ctx context.Context, ev dispatch.Event) (*dispatch.Enqueueing, error) {
	d.prepares.Add(1)
	return d.Engine.Prepare(ctx, ev)
}

func (d *countingDispatcher) Enqueue(ctx context.Context, ev dispatch.Event) error {
	d.enqueues.Add(1)
	return d.Engine.Enqueue(ctx, ev)
}

type oneEndpoint struct{ hook project.Webhook }

func (o oneEndpoint) ProjectWebhooks(context.Context, string) ([]project.Webhook, error) {
	return []project.Webhook{o.hook}, nil
}

// On one Redis a completion writes its task.completed delivery in its own
// round trip (Prepare, then the enqueue scripts after complete.lua),
// with no Enqueue of its own after it, and the receiver gets the
// completed message; on a Cluster it enqueues after the completion.
func TestCompletionWritesItsDeliveryInItsRoundTrip(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	got := make(chan []byte, 4)
	rx := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- b
	}))
	t.Cleanup(rx.Close)
	e := dispatch.New(c, dispatch.Options{Prefix: prefix, Log: zerolog.Nop(), Timeout: 2 * time.Second,
		Endpoints: oneEndpoint{project.Webhook{ID: "wh_1", URL: rx.URL, Events: []string{"task.completed"},
			Enabled: true, Secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}}})
	e.Start()
	t.Cleanup(func() { _ = e.Shutdown(context.Background()) })
	d := &countingDispatcher{Engine: e}
	s := newService(t, c, prefix, answer(`{"title":"Inception"}`), Options{Dispatcher: d})
	s.Start()
	task := newTask()
	if err := s.Submit(context.Background(), task); err != nil {
		t.Fatal(err)
	}
	var body struct {
		Type      string `json:"type"`
		ChannelID string `json:"channel_id"`
		Status    string `json:"status"`
	}
	select {
	case b := <-got:
		if err := json.Unmarshal(b, &body); err != nil {
			t.Fatalf("delivery body %s: %v", b, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no delivery within 10 s")
	}
	if body.Type != "task.completed" || body.ChannelID != task.ChannelID || body.Status != "success" {
		t.Errorf("delivery = %+v", body)
	}
	prepares, enqueues := d.prepares.Load(), d.enqueues.Load()
	if rdb.IsCluster(c) {
		if prepares != 0 || enqueues != 1 {
			t.Errorf("on a Cluster: %d Prepare, %d Enqueue; want 0, 1", prepares, enqueues)
		}
		return
	}
	if prepares != 1 || enqueues != 0 {
		t.Errorf("%d Prepare, %d Enqueue; want 1, 0 (the delivery written in the completion's round trip)", prepares, enqueues)
	}
}
