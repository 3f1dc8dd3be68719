package hub

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// A streamed answer's pieces are pushed as their own events, numbered
// with the channel's messages, replayed on join and from a last_seq,
// never counted against HistoryMax, dropped from the history by the final
// message, and refused after it.
func TestStreamedEntries(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	h, srv := e.node(Options{HistoryMax: 2, StreamMax: 6})
	pid, cid, topic, token := e.channel()
	ctx := context.Background()
	chunk := func(event, payload string) int64 {
		t.Helper()
		seq, err := h.PublishStream(ctx, cid, event, json.RawMessage(payload))
		if err != nil {
			t.Fatalf("%s %s: %v", event, payload, err)
		}
		return seq
	}

	c := dial(t, srv, token)
	ref := c.mustJoin(topic)
	publish(t, h, pid, cid, `{"status":"started"}`)
	c.response(topic, ref, `{"status":"started"}`)
	if seq := chunk(EventChunk, `{"index":1,"delta":"He"}`); seq != 2 {
		t.Fatalf("first chunk's seq %d, want 2", seq)
	}
	chunk(EventChunk, `{"index":2,"delta":"llo"}`)
	if seq := chunk(EventChunk, `{"index":2,"delta":"llo"}`); seq != 0 {
		t.Fatalf("a repeated chunk got seq %d, want 0 (dropped)", seq)
	}
	chunk(EventChunkReset, `{"index":3}`)
	for i, d := range []string{"Hi", " there", "!"} {
		chunk(EventChunk, `{"index":`+string(rune('4'+i))+`,"delta":"`+d+`"}`)
	}
	c.pushed(topic, ref, EventChunk, `{"index":1,"delta":"He"}`)
	c.pushed(topic, ref, EventChunk, `{"index":2,"delta":"llo"}`)
	c.pushed(topic, ref, EventChunkReset, `{"index":3}`)
	c.pushed(topic, ref, EventChunk, `{"index":4,"delta":"Hi"}`)
	c.pushed(topic, ref, EventChunk, `{"index":5,"delta":" there"}`)
	c.pushed(topic, ref, EventChunk, `{"index":6,"delta":"!"}`)

	// Six streamed entries and one message: more than HistoryMax (2), all
	// kept; a join from seq 4 gets what came after.
	c2 := dial(t, srv, token)
	ref2, _ := c2.joinWith(topic, map[string]any{"last_seq": int64(4)})
	c2.pushed(topic, ref2, EventChunk, `{"index":4,"delta":"Hi"}`)
	c2.pushed(topic, ref2, EventChunk, `{"index":5,"delta":" there"}`)
	c2.pushed(topic, ref2, EventChunk, `{"index":6,"delta":"!"}`)
	if extra := c2.heartbeat(); len(extra) > 0 {
		t.Fatalf("a join from seq 4 was also sent %v", extra)
	}
	// HistoryMax + StreamMax entries (8) reached: the stream goes on
	// unseen.
	chunk(EventChunk, `{"index":7,"delta":"?"}`)
	c.pushed(topic, ref, EventChunk, `{"index":7,"delta":"?"}`)
	if _, err := h.PublishStream(ctx, cid, EventChunk, json.RawMessage(`{"index":8,"delta":"?"}`)); !errors.Is(err, ErrStreamFull) {
		t.Fatalf("a chunk past StreamMax: %v, want ErrStreamFull", err)
	}

	final := `{"status":"success","data":"Hi there!"}`
	publish(t, h, pid, cid, final)
	c.response(topic, ref, final)
	c.expectClose(topic, ref)
	hist := e.rdb.LRange(ctx, h.histKey(cid), 0, -1).Val()
	if len(hist) != 2 || hist[0] != `{"seq":1,"payload":{"status":"started"}}` || hist[1] != `{"seq":9,"payload":`+final+`}` {
		t.Fatalf("history after the final message: %q, want the two messages only", hist)
	}
	if _, err := h.PublishStream(ctx, cid, EventChunk, json.RawMessage(`{"index":9,"delta":"late"}`)); !errors.Is(err, ErrChannelEnded) {
		t.Fatalf("a chunk after the final message: %v, want ErrChannelEnded", err)
	}
	if _, err := h.PublishStream(ctx, cid, "response", json.RawMessage(`{}`)); err == nil {
		t.Fatal("PublishStream took a message event")
	}
	// A late joiner from mid-stream gets the final message, which holds
	// the whole answer.
	c3 := dial(t, srv, token)
	ref3, _ := c3.joinWith(topic, map[string]any{"last_seq": int64(5)})
	c3.response(topic, ref3, final)
	c3.expectClose(topic, ref3)
}

func TestParseStreamedEntry(t *testing.T) {
	for s, want := range map[string]entry{
		`{"seq":3,"event":"chunk","payload":{"delta":"a"}}`:     {seq: 3, event: "chunk", payload: `{"delta":"a"}`},
		`{"seq":4,"event":"chunk_reset","payload":{}}`:          {seq: 4, event: "chunk_reset", payload: `{}`},
		`{"seq":5,"payload":{"status":"error"}}`:                {seq: 5, payload: `{"status":"error"}`, final: true},
		`{"seq":6,"event":"phx_close","payload":{}}`:            {},
		`{"seq":7,"event":"chunk"}`:                             {},
		`{"seq":8,"event":"chunk,"payload":{}}`:                 {},
		`{"seq":0,"event":"chunk","payload":{"delta":"a"}}`:     {},
		`{"seq":9,"event":"chunk","payload":{"delta":"a"}} xyz`: {},
	} {
		got, ok := parseEntry(s)
		if ok != (want.seq != 0) || got != want {
			t.Errorf("parseEntry(%s) = %+v, %v; want %+v", s, got, ok, want)
		}
	}
}

// PublishStreamIn queues the piece into the caller's pipeline as EVALSHA;
// on a Redis that does not have the script (restarted, flushed) the
// attempt fails with NOSCRIPT and loads it, so the next try goes in.
func TestPublishStreamInLoadsItsScript(t *testing.T) {
	t.Parallel()
	srv := miniredis.RunT(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { _ = c.Close() })
	h := New(c, Options{Prefix: "t"})
	ctx := context.Background()
	try := func() (int64, error) {
		p := c.Pipeline()
		res := h.PublishStreamIn(ctx, p, "c1", EventChunk, json.RawMessage(`{"index":1,"delta":"a"}`))
		_, _ = p.Exec(ctx)
		return res()
	}
	if _, err := try(); err == nil || !strings.Contains(err.Error(), "NOSCRIPT") {
		t.Fatalf("first try on a Redis without the script: %v, want NOSCRIPT", err)
	}
	if seq, err := try(); err != nil || seq != 1 {
		t.Fatalf("second try: %d, %v; want seq 1", seq, err)
	}
	if seq, err := try(); err != nil || seq != 0 {
		t.Fatalf("a repeat: %d, %v; want 0", seq, err)
	}
}
