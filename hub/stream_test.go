package hub

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// A streamed answer's pieces are pushed as their own events, numbered
// with the channel's messages, replayed on join and from a last_seq (a
// piece sent twice, once each), never counted against HistoryMax, and
// dropped from the history by the final message.
func TestStreamedEntries(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	h, srv := e.node(Options{HistoryMax: 2, Retention: time.Hour})
	pid, cid, topic, token := e.channel()
	ctx := context.Background()
	var seq int64
	stream := func(event, payload string, again bool) {
		t.Helper()
		if !again {
			seq++
		}
		p := e.rdb.Pipeline()
		if err := h.AppendStreamIn(ctx, p, cid, seq, event, json.RawMessage(payload), seq == 2); err != nil {
			t.Fatal(err)
		}
		if _, err := p.Exec(ctx); err != nil {
			t.Fatal(err)
		}
	}

	c := dial(t, srv, token)
	ref := c.mustJoin(topic)
	publish(t, h, pid, cid, `{"status":"started"}`)
	c.response(topic, ref, `{"status":"started"}`)
	var err error
	if seq, err = h.LastSeq(ctx, cid); err != nil || seq != 1 {
		t.Fatalf("LastSeq %d, %v; want 1", seq, err)
	}
	stream(EventChunk, `{"index":1,"delta":"He"}`, false)
	if ttl := e.rdb.TTL(ctx, h.histKey(cid)).Val(); ttl <= 0 {
		t.Fatalf("history TTL %v after the first piece", ttl)
	}
	stream(EventChunk, `{"index":2,"delta":"llo"}`, false)
	stream(EventChunk, `{"index":2,"delta":"llo"}`, true) // a round trip sent again
	stream(EventChunkReset, `{"index":3}`, false)
	stream(EventChunk, `{"index":4,"delta":"Hi"}`, false)
	stream(EventChunk, `{"index":5,"delta":" there"}`, false)
	stream(EventChunk, `{"index":6,"delta":"!"}`, false)
	c.pushed(topic, ref, EventChunk, `{"index":1,"delta":"He"}`)
	c.pushed(topic, ref, EventChunk, `{"index":2,"delta":"llo"}`)
	c.pushed(topic, ref, EventChunkReset, `{"index":3}`)
	c.pushed(topic, ref, EventChunk, `{"index":4,"delta":"Hi"}`)
	c.pushed(topic, ref, EventChunk, `{"index":5,"delta":" there"}`)
	c.pushed(topic, ref, EventChunk, `{"index":6,"delta":"!"}`)
	if extra := c.heartbeat(); len(extra) > 0 {
		t.Fatalf("the repeat reached the socket: %v", extra)
	}

	// Seven streamed entries (one a repeat) and one message: more than
	// HistoryMax (2), all kept; a fresh join gets each once, a join from
	// seq 5 what came after.
	c1 := dial(t, srv, token)
	ref1 := c1.mustJoin(topic)
	c1.response(topic, ref1, `{"status":"started"}`)
	c1.pushed(topic, ref1, EventChunk, `{"index":1,"delta":"He"}`)
	c1.pushed(topic, ref1, EventChunk, `{"index":2,"delta":"llo"}`)
	c1.pushed(topic, ref1, EventChunkReset, `{"index":3}`)
	c2 := dial(t, srv, token)
	ref2, _ := c2.joinWith(topic, map[string]any{"last_seq": int64(5)})
	c2.pushed(topic, ref2, EventChunk, `{"index":5,"delta":" there"}`)
	c2.pushed(topic, ref2, EventChunk, `{"index":6,"delta":"!"}`)
	if extra := c2.heartbeat(); len(extra) > 0 {
		t.Fatalf("a join from seq 5 was also sent %v", extra)
	}

	final := `{"status":"success","data":"Hi there!"}`
	publish(t, h, pid, cid, final)
	c.response(topic, ref, final)
	c.expectClose(topic, ref)
	hist := e.rdb.LRange(ctx, h.histKey(cid), 0, -1).Val()
	if len(hist) != 2 || hist[0] != `{"seq":1,"payload":{"status":"started"}}` || hist[1] != `{"seq":8,"payload":`+final+`}` {
		t.Fatalf("history after the final message: %q, want the two messages only", hist)
	}
	if seq, err := h.LastSeq(ctx, cid); err != nil || seq != 8 {
		t.Fatalf("LastSeq %d, %v; want 8", seq, err)
	}
	// A late joiner from mid-stream gets the final message, which holds
	// the whole answer.
	c3 := dial(t, srv, token)
	ref3, _ := c3.joinWith(topic, map[string]any{"last_seq": int64(5)})
	c3.response(topic, ref3, final)
	c3.expectClose(topic, ref3)

	p := e.rdb.Pipeline()
	for _, bad := range []error{
		h.AppendStreamIn(ctx, p, cid, 9, "response", json.RawMessage(`{}`), false),
		h.AppendStreamIn(ctx, p, cid, 0, EventChunk, json.RawMessage(`{}`), false),
		h.AppendStreamIn(ctx, p, cid, 9, EventChunk, json.RawMessage(`[1]`), false),
		h.AppendStreamIn(ctx, p, "", 9, EventChunk, json.RawMessage(`{}`), false),
	} {
		if bad == nil {
			t.Fatal("AppendStreamIn took a bad piece")
		}
	}
	if p.Len() != 0 {
		t.Fatalf("bad pieces queued %d commands", p.Len())
	}
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

// The stream's first piece starts the history, with the retention as its
// time to live.
func TestFirstStreamedPieceSetsTheHistoryTTL(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	h, _ := e.node(Options{Retention: time.Hour})
	_, cid, _, _ := e.channel()
	ctx := context.Background()
	p := e.rdb.Pipeline()
	if err := h.AppendStreamIn(ctx, p, cid, 1, EventChunk, json.RawMessage(`{"index":1,"delta":"a"}`), true); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	if ttl := e.rdb.TTL(ctx, h.histKey(cid)).Val(); ttl <= 0 || ttl > time.Hour {
		t.Fatalf("history TTL %v after the first piece, want the retention (1h)", ttl)
	}
}

// A piece that reached the room but not the history (Redis refused its
// RPUSH, out of memory, and took its PUBLISH) leaves its seq free in the
// history: the final message takes it. A join still open gets the final
// message all the same, and ends.
func TestFinalMessageReachesAJoinPastATakenSeq(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	h, srv := e.node(Options{})
	pid, cid, topic, token := e.channel()
	ctx := context.Background()
	c := dial(t, srv, token)
	ref := c.mustJoin(topic)
	entry := `{"seq":1,"event":"chunk","payload":{"index":1,"delta":"a"}}`
	pub := e.rdb.Publish
	if h.cluster != nil {
		pub = e.rdb.SPublish
	}
	if err := pub(ctx, h.roomChannel(cid), entry).Err(); err != nil {
		t.Fatal(err)
	}
	c.pushed(topic, ref, EventChunk, `{"index":1,"delta":"a"}`)
	final := `{"status":"success","data":"a"}`
	publish(t, h, pid, cid, final)
	m := c.read()
	if m.Event != "response" || string(m.Payload) != final || m.Ref == nil || *m.Ref != "1" {
		t.Fatalf("got %s, want the final message with the taken seq 1", m)
	}
	c.expectClose(topic, ref)
}

// A final message that is its channel's first, held by the channel's
// record, is published without a history: live joins get it from the
// room, late ones rebuilt from the record, with the same seq; a repeat is
// dropped. One whose record holds another message keeps a history.
func TestLoneFinalMessageNeedsNoHistory(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	record := func(cid string) string { return e.prefix + ":ch:{" + cid + "}" }
	h, srv := e.node(Options{Retention: time.Hour, HotWindow: 30 * time.Second, Record: record})
	pid, cid, topic, token := e.channel()
	ctx := context.Background()
	final := `{"status":"success","data":{"n":1}}`
	e.rdb.HSet(ctx, record(cid), "status", "success", "message", final)
	e.rdb.Expire(ctx, record(cid), time.Hour)
	c := dial(t, srv, token)
	ref := c.mustJoin(topic)
	publish(t, h, pid, cid, final)
	c.response(topic, ref, final)
	c.expectClose(topic, ref)
	if n := e.rdb.Exists(ctx, h.histKey(cid)).Val(); n != 0 {
		t.Fatalf("a lone final message wrote a history")
	}
	if got := e.rdb.HGet(ctx, record(cid), "room_seq").Val(); got != "1" {
		t.Fatalf("room_seq = %q, want 1", got)
	}
	c2 := dial(t, srv, token)
	ref2 := c2.mustJoin(topic)
	c2.lastSeq = 0
	c2.response(topic, ref2, final)
	c2.expectClose(topic, ref2)
	var seq func() (int64, error)
	if _, err := e.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		seq = h.PublishIn(ctx, p, pid, cid, json.RawMessage(final))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if n, err := seq(); err != nil || n != 0 {
		t.Fatalf("the final message again: seq %d, %v; want 0 (a repeat)", n, err)
	}

	// The record holds another message (not yet written, say): history.
	_, cid2, _, _ := e.channel()
	e.rdb.HSet(ctx, record(cid2), "status", "generating")
	e.rdb.Expire(ctx, record(cid2), time.Hour)
	publish(t, h, pid, cid2, final)
	if hist := e.rdb.LRange(ctx, h.histKey(cid2), 0, -1).Val(); len(hist) != 1 {
		t.Fatalf("history %q, want the final message", hist)
	}
}

// A run racing the one that finished (a lease lost to a pause) may stream
// after a final message that wrote no history: its pieces are numbered
// after the final message's seq, and a join is sent the final message
// (which holds the whole answer), then phx_close, not the stray pieces.
func TestPiecesAfterALoneFinalMessage(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	record := func(cid string) string { return e.prefix + ":ch:{" + cid + "}" }
	h, srv := e.node(Options{Record: record})
	pid, cid, topic, token := e.channel()
	ctx := context.Background()
	final := `{"status":"error","error":{"message":"x"}}`
	e.rdb.HSet(ctx, record(cid), "status", "error", "message", final)
	e.rdb.Expire(ctx, record(cid), time.Hour)
	publish(t, h, pid, cid, final)
	seq, err := h.LastSeq(ctx, cid)
	if err != nil || seq != 1 {
		t.Fatalf("LastSeq %d, %v; want 1 (the final message's, in the record)", seq, err)
	}
	p := e.rdb.Pipeline()
	if err := h.AppendStreamIn(ctx, p, cid, seq+1, EventChunk, json.RawMessage(`{"index":1,"delta":"late"}`), true); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	c := dial(t, srv, token)
	ref := c.mustJoin(topic)
	c.response(topic, ref, final)
	c.expectClose(topic, ref)
}

// A lone final message whose completion wrote it and its seq into the
// record goes out as a bare publish (PublishLoneIn): a socket joined
// before gets it, then phx_close; no history is written; a join after
// reads it from the record. A publish redone after a crash (the record's
// seq written, the publish lost) reaches a socket still waiting.
func TestLonePublish(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	record := func(cid string) string { return e.prefix + ":ch:{" + cid + "}" }
	h, srv := e.node(Options{Retention: time.Hour, HotWindow: 30 * time.Second, Record: record})
	ctx := context.Background()
	final := `{"status":"success","data":{"n":2}}`
	pipe := func(f func(p redis.Pipeliner) func() (int64, error)) int64 {
		t.Helper()
		var seq func() (int64, error)
		if _, err := e.rdb.Pipelined(ctx, func(p redis.Pipeliner) error { seq = f(p); return nil }); err != nil {
			t.Fatal(err)
		}
		n, err := seq()
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	for _, redo := range []bool{false, true} {
		pid, cid, topic, token := e.channel()
		c := dial(t, srv, token)
		ref := c.mustJoin(topic)
		e.rdb.HSet(ctx, record(cid), "status", "success", "message", final, "room_seq", 1)
		e.rdb.Expire(ctx, record(cid), time.Hour)
		if redo {
			if n := pipe(func(p redis.Pipeliner) func() (int64, error) {
				return h.PublishIn(ctx, p, pid, cid, json.RawMessage(final))
			}); n != 0 {
				t.Fatalf("redone publish: seq %d, want 0 (a repeat, sent again)", n)
			}
		} else if n := pipe(func(p redis.Pipeliner) func() (int64, error) {
			return h.PublishLoneIn(ctx, p, pid, cid, json.RawMessage(final))
		}); n != 1 {
			t.Fatalf("lone publish: seq %d, want 1", n)
		}
		c.response(topic, ref, final)
		c.expectClose(topic, ref)
		if n := e.rdb.Exists(ctx, h.histKey(cid)).Val(); n != 0 {
			t.Fatalf("redo %v: a lone final message wrote a history", redo)
		}
		c2 := dial(t, srv, token)
		ref2 := c2.mustJoin(topic)
		c2.lastSeq = 0
		c2.response(topic, ref2, final)
		c2.expectClose(topic, ref2)
	}
}
